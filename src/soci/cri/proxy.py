"""CRI ``runtime.v1.ImageService`` proxy: every call goes on to containerd's CRI plugin, ``PullImage`` leaves its
credentials in the keychain first.

The kubelet (``--image-service-endpoint``) or crictl (``--image-endpoint``) talks to the daemon's socket;
requests and responses are relayed as bytes, so fields this copy of the proto does not know pass unchanged. The
method table comes from the committed proto (``protos/cri/api.proto``): each method the service declares is
forwarded with its call shape. The credentials are recorded before the call is forwarded, because containerd
asks the snapshotter to prepare the image's layers while the pull is still running.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from soci.cri._proto import api_pb2
from soci.cri.keychain import CriKeychain
from soci.errors import InvalidArgument
from soci.registry.credentials import Credentials

log = logging.getLogger(__name__)

IMAGE_SERVICE: Final = "runtime.v1.ImageService"
_HOP_HEADERS: Final = frozenset({"user-agent", "content-type", "te", "authority"})
"""Metadata that belongs to the incoming connection, not to the call: gRPC sets these itself."""


def image_service_methods() -> dict[str, bool]:
    """``{method name: server streaming}`` for every method of ``runtime.v1.ImageService`` in the proto."""
    service = api_pb2.DESCRIPTOR.services_by_name["ImageService"]
    return {method.name: method.server_streaming for method in service.methods}


def credentials_from_auth(auth: api_pb2.AuthConfig) -> Credentials | None:
    """The registry credentials in a CRI ``AuthConfig``, or None when it carries none.

    ``username``/``password`` win over ``auth`` (base64 of ``user:password``), as in containerd's CRI plugin.

    Raises:
        InvalidArgument: ``auth`` is not base64 of ``user:password`` (the message never contains it).
    """
    username, password = auth.username, auth.password
    if auth.auth and not username:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument("PullImage auth.auth is not valid base64") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument("PullImage auth.auth is not base64 of user:password")
    if not (username or password or auth.identity_token or auth.registry_token):
        return None
    return Credentials(username, password, auth.identity_token, auth.registry_token)


def _forwarded_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key.lower() not in _HOP_HEADERS
    )


class ImageServiceProxy:
    """Forwards CRI image calls to ``target`` (containerd's socket, ``[cri_keychain] image_service_path``).

    Args:
        target: unix socket path (or ``unix://path``) of the CRI server.
        keychain: where ``PullImage`` credentials go.
    """

    def __init__(self, target: str, keychain: CriKeychain) -> None:
        self.target = target.removeprefix("unix://")
        self.keychain = keychain
        self._channel: grpc.aio.Channel | None = None

    def _upstream(self) -> grpc.aio.Channel:
        # made on first use: the channel belongs to the event loop that serves the calls
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(f"unix:{self.target}")
        return self._channel

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def handler(self) -> Any:
        """A ``grpc.GenericRpcHandler`` serving ``runtime.v1.ImageService`` by forwarding."""
        handlers: dict[str, Any] = {}
        for name, streaming in image_service_methods().items():
            path = f"/{IMAGE_SERVICE}/{name}"
            if streaming:
                handlers[name] = grpc.unary_stream_rpc_method_handler(self._stream_forwarder(path))
            else:
                handlers[name] = grpc.unary_unary_rpc_method_handler(self._unary_forwarder(path, name))
        return grpc.method_handlers_generic_handler(IMAGE_SERVICE, handlers)

    def _unary_forwarder(self, path: str, name: str) -> Callable[[bytes, Any], Any]:
        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            if name == "PullImage":
                await self._capture(request, context)
            call = self._upstream().unary_unary(path)
            try:
                response: bytes = await call(
                    request,
                    timeout=context.time_remaining(),
                    metadata=_forwarded_metadata(context.invocation_metadata()),
                )
            except grpc.aio.AioRpcError as exc:
                await self._abort(context, name, exc)
            return response

        return forward

    def _stream_forwarder(self, path: str) -> Callable[[bytes, Any], AsyncIterator[bytes]]:
        name = path.rsplit("/", 1)[-1]

        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
            call = self._upstream().unary_stream(path)
            try:
                async for response in call(
                    request,
                    timeout=context.time_remaining(),
                    metadata=_forwarded_metadata(context.invocation_metadata()),
                ):
                    yield response
            except grpc.aio.AioRpcError as exc:
                await self._abort(context, name, exc)

        return forward

    async def _capture(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        try:
            pull = api_pb2.PullImageRequest.FromString(request)
        except DecodeError:  # containerd gives the caller its own answer to a malformed request
            log.warning("CRI PullImage request is not a valid runtime.v1 message; forwarding it unread")
            return
        image = pull.image.image
        try:
            credentials = credentials_from_auth(pull.auth) if pull.HasField("auth") else None
            if credentials is not None:
                self.keychain.remember(image, credentials)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"PullImage {image!r}: {exc}")

    async def _abort(
        self, context: grpc.aio.ServicerContext[bytes, bytes], name: str, exc: grpc.aio.AioRpcError
    ) -> Any:
        code = exc.code()
        details = exc.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"CRI image service at {self.target} is unavailable ({name}): {details}"
        await context.abort(code, details)
        raise AssertionError("unreachable: abort raises")
