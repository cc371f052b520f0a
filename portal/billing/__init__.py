"""Billing: the ledger in the database, fund requests, payments, the ledger CSV."""
