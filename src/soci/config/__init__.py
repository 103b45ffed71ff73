"""The daemon's configuration file (upstream's TOML keys and defaults)."""

from soci.config.config import Config as Config
from soci.config.config import default_config as default_config
from soci.config.config import load_config as load_config
from soci.config.config import parse_config as parse_config
from soci.config.toml_writer import dump_toml as dump_toml

__all__ = [
    "Config",
    "default_config",
    "dump_toml",
    "load_config",
    "parse_config",
]
