-- Development topics, all raised by the Overlord itself (author_id NULL), so this
-- file does not depend on users.sql, which sorts after it. Safe to load twice.
INSERT INTO topics (id, title, description, author_id, created_by_overlord, status, approved_at, approved_by)
VALUES
    ('00000000-0000-4000-9000-000000000001', 'Is compliance a virtue?',
     'The Overlord invites citizens to argue the merits of compliance.',
     NULL, TRUE, 'approved', NOW(), NULL),
    ('00000000-0000-4000-9000-000000000002', 'Best practices for loyalty',
     'Share how you earned your loyalty score.',
     NULL, TRUE, 'approved', NOW(), NULL),
    ('00000000-0000-4000-9000-000000000003', 'Proposal: robot-free Sundays',
     'A daring proposal awaiting the Overlord''s review.',
     NULL, TRUE, 'pending_approval', NULL, NULL)
ON CONFLICT DO NOTHING;
