"""The pieces of `headstart tune`: the search space, the fine-tuning HyperModel, the tuners
(with keras-tuner's resume bugs worked around), the chief/worker role and the results files."""
