"""The membership attack's statistics, host side: numpy and scipy only, never JAX or matplotlib.

One orientation convention holds in every module here. A score's *native* values
(the loss, LiRA's logit-scaled confidence φ, the hinge) point either way; the
attack works on the **attack statistic** s, where **high = member**, and on the
one decision rule "member iff s > u" (strict). ``scores.to_attack`` turns native
values into s (s = -loss; s = φ and s = hinge as they are) and ``scores.from_attack``
turns a cut u back; the threshold rules, the metrics and the summaries assume s
and never look at a score's direction again.

Modules:
  scores      the scores as records (``SCORES``), from logits, and their orientation
  thresholds  the threshold rules, ``Decision``, and what a threshold promises on
              fresh non-members (held-out FPR laws, Gaussian and likelihood-ratio fits)
  metrics     ROC, AUC, balanced accuracy, TPR at FPR, average precision, intervals
  bounds      one-sided Clopper-Pearson bounds and the ε lower bound
  summary     every number of the attack on one target (``summarize``), ``Settings``
  signals     the reference-model attacks' one signature and their per-model signals
  lira        LiRA online and offline (Carlini et al. 2022) and the loss attack
  rmia        RMIA online, offline and with a tuned a (Zarifzadeh et al. 2024)
  protocol    the attacks with their options, leave one model out, the pooled
              metrics and the bootstrap over target models

Importing this package imports none of them, and ``scores`` and ``thresholds``
import scipy only when a function needs it, so the configuration can read the
names of the scores and rules without loading scipy.
"""
