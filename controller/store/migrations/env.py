"""Alembic environment: runs the migrations on the URL the caller configured."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from controller.store.schema import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "migrate() sets sqlalchemy.url"
connectable = config.attributes.get("connection")

if connectable is None:
    # migrate() bounds connecting on Postgres (connect timeout, keepalives)
    engine = create_engine(
        url, poolclass=pool.NullPool, connect_args=config.attributes.get("connect_args", {})
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
else:
    context.configure(connection=connectable, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
