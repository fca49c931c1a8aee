"""Training code for MSR-net models (needs the ``train`` extra: torch, scikit-image).

Nothing on the enhancement path imports this package.
"""
