"""The provider's serving plane: an HTTP endpoint paid per request with signed payment
receipts, a durable ledger of leaves, batch commits and voucher collection (see
:mod:`worker.serving.provider`)."""
