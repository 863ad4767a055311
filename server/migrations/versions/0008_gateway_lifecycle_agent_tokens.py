"""gateway lifecycle, agent token replay, idle timeout per school

- `gateways.disabled_at`: when IT disabled the gateway (None: in service). A disabled gateway's
  agent tokens are refused and its segments are reported unenforced (issue 13, item 6).
- `agent_token_uses`: the `jti` of every agent token the server accepted, until the token's
  lifetime is over, so a replayed token is refused by every process (issue 13, item 7). Rows
  whose `expires_at` passed are deleted (server/agent_tokens.py).
- `enrollment_tokens.reenrol`: issued by IT's explicit re-enrolment; only such a token replaces
  the key of an enrolled gateway.
- `schools.idle_minutes`: the school's dashboard idle timeout; None: the install's default
  (LESFOCUS_DASHBOARD_IDLE_MINUTES).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02 06:45:00

"""
from alembic import op
import sqlalchemy as sa
import server.models


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('gateways', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_at', server.models.UTCDateTime(), nullable=True))
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reenrol', sa.Boolean(), server_default='0',
                                      nullable=False))
    with op.batch_alter_table('schools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idle_minutes', sa.Integer(), nullable=True))
    op.create_table('agent_token_uses',
    sa.Column('gateway_id', sa.String(length=36), nullable=False),
    sa.Column('jti', sa.String(length=128), nullable=False),
    sa.Column('expires_at', server.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['gateway_id'], ['gateways.id'],
                            name=op.f('fk_agent_token_uses_gateway_id_gateways'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('gateway_id', 'jti', name=op.f('pk_agent_token_uses'))
    )
    with op.batch_alter_table('agent_token_uses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_token_uses_expires_at'), ['expires_at'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('agent_token_uses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_token_uses_expires_at'))
    op.drop_table('agent_token_uses')
    with op.batch_alter_table('schools', schema=None) as batch_op:
        batch_op.drop_column('idle_minutes')
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.drop_column('reenrol')
    with op.batch_alter_table('gateways', schema=None) as batch_op:
        batch_op.drop_column('disabled_at')
