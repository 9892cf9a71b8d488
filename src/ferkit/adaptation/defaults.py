"""The defaults of `ferkit adapt`, importable without torch (the command line shows them in --help)."""

# Pull of the new heads toward the shipped ones: chosen on the posed dev set's person-disjoint curve
# (docs/adapt.md), where it is flat between 0.001 and 0.01.
DEFAULT_L2 = 0.003
# Jittered copies of each photo added to the fit: none by default, as they did not help on the posed
# dev set (docs/adapt.md) and each costs one more feature pass.
DEFAULT_AUGMENT = 0
# Weight of the recombined shipped heads (an 8x8 recalibration of the logits) in the blend with the
# new heads (docs/adapt.md).
DEFAULT_REMAP = 0.5
# What the adapted model does with classes that have no photos: "shipped" keeps the shipped heads'
# rows (the rule: the photos say nothing about them), "off" never answers them.
DEFAULT_ABSENT = "shipped"
