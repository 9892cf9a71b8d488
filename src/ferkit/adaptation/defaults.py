"""The defaults of `ferkit adapt`, importable without torch (the command line shows them in --help)."""

# Pull of the new heads toward the shipped ones: chosen on the posed dev set's person-disjoint curve
# (docs/adapt.md), where it is flat between 0.001 and 0.01.
DEFAULT_L2 = 0.003
# Jittered copies of each photo added to the fit (docs/adapt.md); each costs one more feature pass.
DEFAULT_AUGMENT = 2
