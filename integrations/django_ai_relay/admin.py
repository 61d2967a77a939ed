from . import ledger_admin  # noqa: F401  (the ledger's change list and usage page)
