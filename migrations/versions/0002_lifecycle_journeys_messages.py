"""lifecycle, journeys, decisions, messages, devices, schedules

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from service.kit.db import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rule_versions",
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=12), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("first_loaded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "version", name=op.f("pk_rule_versions")),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("last_fired_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "timezone", name=op.f("pk_schedule_runs")),
    )
    op.create_table(
        "decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=True),
        sa.Column("rule_version", sa.String(length=12), nullable=True),
        sa.Column(
            "journey_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["users.id"],
            name=op.f("fk_decisions_profile_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index("ix_decisions_profile", ["profile_id", "id"], unique=False)

    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=4096), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["users.id"],
            name=op.f("fk_devices_profile_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_profile_id"), ["profile_id"], unique=False)

    op.create_table(
        "journeys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("rule_version", sa.String(length=12), nullable=False),
        sa.Column("journey_key", sa.String(length=200), nullable=False),
        sa.Column(
            "trigger_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("trigger_properties", JSON, nullable=True),
        sa.Column("variant", sa.String(length=50), nullable=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("pc", sa.Integer(), nullable=False),
        sa.Column("wake_at", UTCDateTime(), nullable=True),
        sa.Column("waiting_for", sa.String(length=200), nullable=True),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.Column("goal_deadline", UTCDateTime(), nullable=True),
        sa.Column("converted_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["users.id"],
            name=op.f("fk_journeys_profile_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journeys")),
    )
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_journeys_due",
            ["wake_at"],
            unique=False,
            postgresql_where=sa.text("wake_at IS NOT NULL"),
            sqlite_where=sa.text("wake_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_journeys_profile_rule", ["profile_id", "rule_id", "entered_at"], unique=False
        )
        batch_op.create_index(
            "uq_journeys_active",
            ["profile_id", "rule_id", "journey_key"],
            unique=True,
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        )

    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dedupe_key", sa.String(length=300), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=True),
        sa.Column(
            "journey_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("rule_id", sa.String(length=100), nullable=True),
        sa.Column("rule_version", sa.String(length=12), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(length=50), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=False),
        sa.Column("to_address", sa.String(length=4096), nullable=True),
        sa.Column("transactional", sa.Boolean(), nullable=False),
        sa.Column("variables", JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("send_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["users.id"],
            name=op.f("fk_messages_profile_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_messages_dedupe_key")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_profile_created", ["profile_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_messages_status_send_at", ["status", "send_at"], unique=False)

    op.create_table(
        "stage_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(length=50), nullable=True),
        sa.Column("to_stage", sa.String(length=50), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("cause", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["users.id"],
            name=op.f("fk_stage_changes_profile_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_changes")),
    )
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.create_index("ix_stage_changes_profile", ["profile_id", "at"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("stage_since", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("activated_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_active_at", UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("inactivity_handled", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("due_at", UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_users_due_at"), ["due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_due_at"))
        batch_op.drop_column("due_at")
        batch_op.drop_column("inactivity_handled")
        batch_op.drop_column("last_active_at")
        batch_op.drop_column("activated_at")
        batch_op.drop_column("stage_since")
        batch_op.drop_column("stage")

    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_stage_changes_profile")

    op.drop_table("stage_changes")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_status_send_at")
        batch_op.drop_index("ix_messages_profile_created")

    op.drop_table("messages")
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_journeys_active",
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        )
        batch_op.drop_index("ix_journeys_profile_rule")
        batch_op.drop_index(
            "ix_journeys_due",
            postgresql_where=sa.text("wake_at IS NOT NULL"),
            sqlite_where=sa.text("wake_at IS NOT NULL"),
        )

    op.drop_table("journeys")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_profile_id"))

    op.drop_table("devices")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_profile")

    op.drop_table("decisions")
    op.drop_table("schedule_runs")
    op.drop_table("rule_versions")
