-- Development topics by the seeded users (users.sql sorts first). Safe to load twice.
INSERT INTO topics (id, title, description, author_id, created_by_overlord, status, approved_at, approved_by)
VALUES
    ('00000000-0000-4000-9000-000000000001', 'Is compliance a virtue?',
     'The Overlord invites citizens to argue the merits of compliance.',
     NULL, TRUE, 'approved', NOW(), '00000000-0000-4000-8000-000000000001'),
    ('00000000-0000-4000-9000-000000000002', 'Best practices for loyalty',
     'Share how you earned your loyalty score.',
     '00000000-0000-4000-8000-000000000004', FALSE, 'approved', NOW(), '00000000-0000-4000-8000-000000000003'),
    ('00000000-0000-4000-9000-000000000003', 'Proposal: robot-free Sundays',
     'A daring proposal awaiting review.',
     '00000000-0000-4000-8000-000000000005', FALSE, 'pending_approval', NULL, NULL)
ON CONFLICT DO NOTHING;
