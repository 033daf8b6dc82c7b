"""Effect functions: the only code that changes anything. Loaded by the executor's applier in live mode only;
plans never import these."""
