"""The file names a population run writes besides the shared ones (run.json, config.yaml,
results.json), named once here for the figures module, the kind and the run folder alike."""

ARRAYS_FILE = "population.npz"
HISTOGRAMS_FILE = "population_histograms.png"
ROC_FILE = "population_roc.png"
PR_FILE = "population_pr.png"
FIGURES = (HISTOGRAMS_FILE, ROC_FILE, PR_FILE)
