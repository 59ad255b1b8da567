"""Choices and defaults shared by the config, the CLI and the docs.

Kept free of imports so that the CLI can build its options at ``llm``
start-up without loading the rest of the plugin.
"""

JUDGING_METHODS = ("default", "rank")
CLUSTERING_ALGORITHMS = ("dbscan", "hdbscan", "tropical")
EMBEDDING_BACKENDS = ("openai", "sentence-transformers", "chutes", "llm")
DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 2
