"""The store's tests (``openclaw_billing/store/``), in one place.

The storage contract, on every backend (the ``store`` fixture of tests/backends.py):
``test_contract.py`` (every Store primitive), ``test_contract_audit.py`` (an admin action and
its audit event are one step; a read is one snapshot), ``test_contract_access.py`` (keys,
policy, plan change and the authentication read), ``test_bounds.py`` (boundary values),
``test_query.py`` (the operator's reads: client queries and the overview, and the SQL backends
answering as the JSON store), ``test_contract_jobs.py`` (jobs accepted with their charges) and
``test_model.py`` (a reference model of the billing rules).

What one backend does on its own: the JSON store (``test_json_file.py``,
``test_json_journal.py``, ``test_legacy.py``, ``test_corrupt.py``, ``test_crash.py``,
``test_crash_journal.py``, ``test_concurrency.py``, ``test_filelock.py``), the SQL
schema's upgrades (``test_sql_schema.py``) and the files of the file backends
(``test_file_modes.py``).
"""
