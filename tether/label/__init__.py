"""Human labeling: `tether label` serves a local page where a person picks the better of two responses.

`tether.label.server` is the page and its API; `tether.label.stats` reads label
files, applies undo records (`effective_labels`), keeps what a reward model
trains on (`preference_labels`) and computes agreement statistics.
"""
