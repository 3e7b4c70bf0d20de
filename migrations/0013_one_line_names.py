"""Names on one line: customers' and businesses' names saved with line breaks or other control
characters (before the portal and dashboard refused them) get spaces instead, so that e-mails
to those customers, or of those businesses, can be written again. Nothing else changes."""

import re

from peewee import Table

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
TABLES = ("customer", "business")


def up(migrator, db):
    for name in TABLES:
        table = Table(name, ("id", "name")).bind(db)
        for row in table.select(table.id, table.name).where(table.name.is_null(False)).iterator():
            cleaned = " ".join(CONTROL.sub(" ", row["name"]).split())
            if cleaned != row["name"] and CONTROL.search(row["name"]):
                table.update(name=cleaned).where(table.id == row["id"]).execute()


def down(migrator, db):
    pass  # the line breaks were never meant to be there
