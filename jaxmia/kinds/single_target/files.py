"""The file names a single-target run writes besides the shared ones (run.json, config.yaml,
results.json): its arrays and its figures, named once here for the figures module, the
kind and the run folder's bookkeeping alike."""

from jaxmia.privacy import AUDIT_FIGURE  # a DP-SGD run's privacy_audit.png

ARRAYS_FILE = "losses.npz"
HISTOGRAMS_FILE = "single_point_mia_histograms.png"
ROC_FILE = "roc.png"
PR_FILE = "pr.png"
TARGET_FILE = "target.png"
FIGURES = (HISTOGRAMS_FILE, ROC_FILE, PR_FILE, TARGET_FILE, AUDIT_FIGURE)
