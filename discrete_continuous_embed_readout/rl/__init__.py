"""What RL libraries meet, on top of the core's public names: gymnasium spaces
(``spaces.SpaceAdapter``, needs numpy and gymnasium) and the TorchRL composite
policy distribution (``composite.CompositeActionDistribution``, needs tensordict).
Both are optional dependencies, so nothing is imported here: the package's top level
exports both names lazily."""
