"""Choices and defaults shared by the config, the CLI and the docs.

Kept free of imports so that the CLI can build its options at ``llm``
start-up without loading the rest of the plugin.
"""

JUDGING_METHODS = ("default", "rank")
CLUSTERING_ALGORITHMS = ("dbscan", "hdbscan", "tropical")
EMBEDDING_BACKENDS = ("openai", "sentence-transformers", "chutes", "llm")
#: Words read as true / false (strategy parameters, the arbiter's tags).
TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "off", "0"})
DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 2
