"""Alembic: one head, and `upgrade head` yields exactly the models' schema."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from bps.models import Base

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


def schema_diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_there_is_one_head():
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads


def test_upgrade_head_on_empty_sqlite_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path}/migrated.db"
    command.upgrade(alembic_config(url), "head")
    assert schema_diff(url) == []
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_downgrade_base_removes_every_table(tmp_path):
    url = f"sqlite:///{tmp_path}/migrated.db"
    command.upgrade(alembic_config(url), "head")
    command.downgrade(alembic_config(url), "base")
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert tables == set()


@pytest.mark.postgres
def test_upgrade_head_on_empty_postgres_matches_models(postgres_url):
    command.upgrade(alembic_config(postgres_url), "head")
    assert schema_diff(postgres_url) == []
