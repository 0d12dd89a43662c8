-- Development users: one of each role. Safe to load twice.
INSERT INTO users (id, email, google_id, username, role, loyalty_score, email_verified)
VALUES
    ('00000000-0000-4000-8000-000000000001', 'ada@example.com',    'google-0001', 'ada',    'superadmin', 950, TRUE),
    ('00000000-0000-4000-8000-000000000002', 'brutus@example.com', 'google-0002', 'brutus', 'admin',      610, TRUE),
    ('00000000-0000-4000-8000-000000000003', 'cato@example.com',   'google-0003', 'cato',   'moderator',  420, TRUE),
    ('00000000-0000-4000-8000-000000000004', 'dido@example.com',   'google-0004', 'dido',   'citizen',    130, TRUE),
    ('00000000-0000-4000-8000-000000000005', 'enzo@example.com',   'google-0005', 'enzo',   'citizen',      0, FALSE)
ON CONFLICT DO NOTHING;
