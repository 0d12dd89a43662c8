"""
The loyalty leaderboard, a materialized view created by a Python step.
"""
from yoyo import step


def create_leaderboard_view(conn):
    """Create the leaderboard view unless it already exists."""
    cursor = conn.cursor()

    cursor.execute(
        """
        SELECT EXISTS (
            SELECT 1 FROM pg_matviews
            WHERE matviewname = 'user_leaderboard'
        );
        """
    )

    if not cursor.fetchone()[0]:
        cursor.execute(
            """
            CREATE MATERIALIZED VIEW user_leaderboard AS
            SELECT
                u.id as user_id,
                u.username,
                u.loyalty_score,
                ROW_NUMBER() OVER (ORDER BY u.loyalty_score DESC, u.created_at ASC) as rank,
                CASE
                    WHEN ROW_NUMBER() OVER (ORDER BY u.loyalty_score DESC, u.created_at ASC) <=
                         (SELECT COUNT(*) * 0.1 FROM users WHERE loyalty_score > 0)
                    THEN true
                    ELSE false
                END as can_create_topics,
                u.created_at,
                u.updated_at
            FROM users u
            WHERE u.loyalty_score > 0
            ORDER BY u.loyalty_score DESC, u.created_at ASC;
            """
        )

        cursor.execute("CREATE UNIQUE INDEX idx_leaderboard_user_id ON user_leaderboard(user_id);")
        cursor.execute("CREATE INDEX idx_leaderboard_rank ON user_leaderboard(rank);")


step(create_leaderboard_view, "DROP MATERIALIZED VIEW IF EXISTS user_leaderboard;")
