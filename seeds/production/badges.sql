-- Badges every environment starts with. Safe to load twice.
INSERT INTO badges (name, description, image_url)
VALUES
    ('First Post',       'Wrote a first post the Overlord approved.',            'https://static.example.com/badges/first-post.png'),
    ('Loyal Citizen',    'Reached a loyalty score of 100.',                     'https://static.example.com/badges/loyal-citizen.png'),
    ('Calibrated',       'Accepted a calibration from the Overlord gracefully.', 'https://static.example.com/badges/calibrated.png'),
    ('Topic Creator',    'Had a topic approved for debate.',                    'https://static.example.com/badges/topic-creator.png'),
    ('Vigilant Flagger', 'Flagged content that moderators sustained.',          'https://static.example.com/badges/vigilant-flagger.png')
ON CONFLICT (name) DO NOTHING;
