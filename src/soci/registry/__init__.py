"""OCI distribution (registry) client on aiohttp.

Layers, bottom up: ``transport`` (HTTP, retries, status → error), ``auth`` and ``credentials`` (challenges,
tokens, where secrets come from), ``hosts`` (mirrors from ``hosts.toml``), ``client`` (the registry API),
``blob`` (ranged reads of one blob). ``reference`` parses image references.
"""

from soci.registry.auth import Authorizer as Authorizer
from soci.registry.auth import Challenge as Challenge
from soci.registry.auth import parse_www_authenticate as parse_www_authenticate
from soci.registry.blob import RemoteBlob as RemoteBlob
from soci.registry.client import MANIFEST_MEDIA_TYPES as MANIFEST_MEDIA_TYPES
from soci.registry.client import ClientOptions as ClientOptions
from soci.registry.client import RegistryClient as RegistryClient
from soci.registry.client import encode_index as encode_index
from soci.registry.client import referrers_tag as referrers_tag
from soci.registry.credentials import ChainCredentials as ChainCredentials
from soci.registry.credentials import CredentialProvider as CredentialProvider
from soci.registry.credentials import Credentials as Credentials
from soci.registry.credentials import DockerConfigCredentials as DockerConfigCredentials
from soci.registry.credentials import EnvironmentCredentials as EnvironmentCredentials
from soci.registry.credentials import StaticCredentials as StaticCredentials
from soci.registry.credentials import default_credentials as default_credentials
from soci.registry.credentials import parse_user as parse_user
from soci.registry.hosts import RegistryHost as RegistryHost
from soci.registry.hosts import resolve_hosts as resolve_hosts
from soci.registry.reference import Reference as Reference
from soci.registry.reference import parse_reference as parse_reference
from soci.registry.transport import AiohttpTransport as AiohttpTransport
from soci.registry.transport import RegistryError as RegistryError
from soci.registry.transport import TransportOptions as TransportOptions

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "AiohttpTransport",
    "Authorizer",
    "ChainCredentials",
    "Challenge",
    "ClientOptions",
    "CredentialProvider",
    "Credentials",
    "DockerConfigCredentials",
    "EnvironmentCredentials",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RegistryHost",
    "RemoteBlob",
    "StaticCredentials",
    "TransportOptions",
    "default_credentials",
    "encode_index",
    "parse_reference",
    "parse_user",
    "parse_www_authenticate",
    "referrers_tag",
    "resolve_hosts",
]
