"""The file names a many-targets run writes besides the shared ones (run.json, config.yaml,
results.json), named once here for the figures module, the kind and the run folder alike."""

ARRAYS_FILE = "targets.npz"
CSV_FILE = "targets.csv"
VULNERABILITY_FILE = "vulnerability.png"
ROC_FILE = "targets_roc.png"
ATTACKS_CSV_FILE = "attacks.csv"  # one row per attack and setting (attacks.py)
ATTACKS_ROC_FILE = "attacks_roc.png"  # every attack on one log-log ROC (attack_figures.py)
REFERENCE_CURVE_FILE = "reference_curve.png"  # the attacks as references grow
FIGURES = (VULNERABILITY_FILE, ROC_FILE, ATTACKS_ROC_FILE, REFERENCE_CURVE_FILE)
TABLES = (CSV_FILE, ATTACKS_CSV_FILE)
