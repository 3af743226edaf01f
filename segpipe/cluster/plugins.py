"""Workers own their models: a WorkerPlugin hands one model to every worker once, including workers that join later."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from distributed import Client, Worker, WorkerPlugin

if TYPE_CHECKING:
    from segpipe.models import ModelRef


class ModelIdentity(Protocol):
    """What the cluster needs of a model reference: its content hash (``segpipe.models`` ModelRef has it)."""

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the model file."""
        ...


class ModelPlugin(WorkerPlugin):
    """Installs ``model_ref`` (its file's bytes in ``payload``) on each worker it is attached to."""

    idempotent = True  # registered again under the same name (same sha256): workers keep the installed model

    def __init__(self, model_ref: ModelRef, payload: bytes) -> None:
        """Hold the model's reference and its file's bytes until a worker sets the plugin up."""
        self.model_ref = model_ref
        self.payload = payload

    def setup(self, worker: Worker) -> None:
        """Call ``segpipe.models.install_model`` on this worker (imported here, where the model is used)."""
        from segpipe.models import install_model

        install_model(self.model_ref, self.payload)

    def teardown(self, worker: Worker) -> None:
        """Forget the model and close what this worker's tasks opened (TIFF handles, object-store clients)."""
        from segpipe.io.images import close_images
        from segpipe.models import uninstall_model
        from segpipe.storage import close_filesystems

        uninstall_model(self.model_ref)
        close_images()
        close_filesystems()


def plugin_name(ref: ModelIdentity) -> str:
    """The plugin's name: one per model content, so registering the same model twice is a no-op."""
    return f"segpipe-model-{ref.sha256[:16]}"


def register_model(client: Client, ref: ModelRef, payload: bytes) -> str:
    """Install ``ref`` on every worker of ``client``'s cluster, now and on workers started later; returns the name."""
    name = plugin_name(ref)
    client.register_plugin(ModelPlugin(ref, payload), name=name)
    return name
