"""Config loaders: where a worker's PipelineConfig comes from. They do the I/O the contract does not.

    parse_config_arg("file:PATH")                -> FileConfigSource    (a JSON file, polled)
    parse_config_arg("configmap:NAMESPACE/NAME") -> KubeConfigMapSource (the ConfigMap, watched)

The contract (``alertpipe.workers.config``) never imports this package (an import-linter contract
says so), so the operator and the rule engine pull in no watcher, poller or CLI parsing.
"""

from alertpipe.workers.config.loaders.cli import add_config_argument, parse_config_arg
from alertpipe.workers.config.loaders.file import FileConfigSource
from alertpipe.workers.config.loaders.kube import CONFIG_KEY, KubeConfigMapSource, config_from_configmap_data

__all__ = [
    "CONFIG_KEY",
    "FileConfigSource",
    "KubeConfigMapSource",
    "add_config_argument",
    "config_from_configmap_data",
    "parse_config_arg",
]
