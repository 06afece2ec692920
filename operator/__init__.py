"""alertpipe's control plane (Kopf): CRD models, reconcilers, scaling and canary decisions, admission.

Canary rollouts: the step machine is decisions/canary.py, the tracks' documents decisions/tracks.py,
the analysis decisions/analysis.py and the shadow tally decisions/shadow.py; rollouts.py drives them.
"""
