"""
Initial schema of The Robot Overlord: users, topics and posts.

Fixed from the seed: the pgvector extension is named ``vector``; pgcrypto is
not needed because gen_random_uuid() is built into PostgreSQL 13+; and this
migration creates the whole initial schema (the seed's SQL form), since 0002
references topics and posts.
"""
from yoyo import step

step(
    """
    -- Enable required extensions
    CREATE EXTENSION IF NOT EXISTS "citext";
    CREATE EXTENSION IF NOT EXISTS "vector";

    -- Users table
    CREATE TABLE users (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        email VARCHAR(255) NOT NULL UNIQUE,
        google_id VARCHAR(255) NOT NULL UNIQUE,
        username VARCHAR(100) NOT NULL,
        role VARCHAR(20) NOT NULL CHECK (role IN ('citizen', 'moderator', 'admin', 'superadmin')),
        loyalty_score INTEGER DEFAULT 0,
        is_banned BOOLEAN DEFAULT FALSE,
        is_sanctioned BOOLEAN DEFAULT FALSE,
        email_verified BOOLEAN DEFAULT FALSE,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
    );

    -- Topics table
    CREATE TABLE topics (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        title VARCHAR(500) NOT NULL,
        description TEXT NOT NULL,
        author_id UUID REFERENCES users(id) ON DELETE SET NULL,
        created_by_overlord BOOLEAN DEFAULT FALSE,
        status VARCHAR(20) NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected')),
        approved_at TIMESTAMP WITH TIME ZONE,
        approved_by UUID REFERENCES users(id),
        created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
    );

    -- Posts table
    CREATE TABLE posts (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        topic_id UUID NOT NULL REFERENCES topics(id) ON DELETE CASCADE,
        parent_post_id UUID REFERENCES posts(id) ON DELETE CASCADE,
        author_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        content TEXT NOT NULL,
        status VARCHAR(20) NOT NULL CHECK (status IN ('pending', 'approved', 'calibrated', 'rejected')),
        overlord_feedback TEXT,
        submitted_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        approved_at TIMESTAMP WITH TIME ZONE
    );

    -- Create indexes
    CREATE INDEX idx_users_loyalty_score ON users(loyalty_score DESC) WHERE loyalty_score > 0;
    CREATE INDEX idx_users_username ON users(username);
    CREATE INDEX idx_topics_status ON topics(status);
    CREATE INDEX idx_posts_topic_submission ON posts(topic_id, submitted_at);
    CREATE INDEX idx_posts_status ON posts(status);
    """,
    # Extensions are deliberately kept: they might be used by other
    # applications (the seed's rollback says so). The round-trip check lists
    # this as an accepted exception in pyproject.toml.
    """
    DROP TABLE IF EXISTS posts;
    DROP TABLE IF EXISTS topics;
    DROP TABLE IF EXISTS users;
    """,
)
