"""Invoice PDFs kept per language: a table of (invoice, locale, pdf) replaces the invoice's
single cached PDF, which was in whatever language it was first rendered in (it is rendered
again on first download)."""
from peewee import BlobField, CharField, CompositeKey, DateTimeField, ForeignKeyField, Model


def up(migrator, db):
    class Invoice(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'invoice'

    class InvoicePdf(Model):
        invoice = ForeignKeyField(Invoice, on_delete='CASCADE')
        locale = CharField(max_length=16)
        pdf = BlobField()
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'invoice_pdf'
            primary_key = CompositeKey('invoice', 'locale')
    db.create_tables([InvoicePdf])
    migrator.migrate(migrator.drop_column('invoice', 'pdf'))


def down(migrator, db):
    migrator.migrate(migrator.add_column('invoice', 'pdf', BlobField(null=True)),
                     migrator.drop_table('invoice_pdf'))
