"""The inference thread: model loading and generation off the GUI thread.

`InferenceWorker` lives on its own QThread and runs one request at a time, in the order the GUI
sent them, so two generations never overlap and a model never changes under a running
generation. `InferenceController` is its GUI-side owner: it numbers every request with a job id,
keeps the cancel flag of the current generation and drops results of jobs that are no longer
current. Neither class touches a widget.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from kl3m_desk.context import PinnedPassage, build_prompt_with_pins
from kl3m_desk.device import load_and_place
from kl3m_desk.engine import KVCache, PrefillCancelled
from kl3m_desk.generation import (
    GenerationResult,
    Prompt,
    stream_alternatives,
    stream_completion,
)
from kl3m_desk.model import LoadedModel, ModelLoadError
from kl3m_desk.model_import import CheckpointImportError, loadable_folder
from kl3m_desk.params import SamplingParams

log = logging.getLogger(__name__)


class InferenceWorker(QObject):
    """Runs load and generation requests on the inference thread.

    Every slot catches every exception, logs it and reports it through a failure signal, so the
    GUI never waits for a result that will not come. Every signal carries the id of its job.
    """

    # job id, step, number of steps, description of the step
    load_progress = Signal(int, int, int, str)
    # job id, LoadedModel
    model_loaded = Signal(int, object)
    # job id, message naming the folder and file at fault
    load_failed = Signal(int, str)
    # job id, Prompt: the window actually given to the model
    generation_started = Signal(int, object)
    # job id, completed piece of text
    text_ready = Signal(int, str)
    # job id, GenerationResult; also emitted after a stop
    generation_finished = Signal(int, object)
    # job id, message for the user; emitted instead of generation_finished
    generation_failed = Signal(int, str)
    # prompt tokens whose keys and values are now cached, after a prefill ran to its end
    prefilled = Signal(int)
    # where the prompt window now starts in the text (Prompt.start), or None after a model load
    anchor_changed = Signal(object)
    # job id, index of the alternative, completed piece of its text
    alternative_text = Signal(int, int, str)
    # job id, index of the alternative, its GenerationResult
    alternative_finished = Signal(int, int, object)
    # job id, list of GenerationResult: every alternative of the request has finished
    alternatives_finished = Signal(int, object)

    def __init__(self, shutting_down: threading.Event) -> None:
        super().__init__()
        self._shutting_down = shutting_down
        self._loaded: LoadedModel | None = None
        # Keys and values of the last prompt and completion, and where that prompt's window
        # started in the text, so the next request recomputes only what changed.
        self._cache: KVCache | None = None
        self._anchor: int | None = None
        self._pins: tuple[PinnedPassage, ...] = ()  # sent by the GUI ahead of each request
        self._history: list[int] = []  # the last prompt's tokens and the completion's, if kept

    @Slot(object)
    def set_pins(self, pins: tuple[PinnedPassage, ...]) -> None:
        """Put `pins` into the prompts of the requests that follow; runs on the inference thread."""
        self._pins = tuple(pins)

    @Slot(int, object, object, object)
    def load(
        self, job_id: int, folder: Path, cancel: threading.Event, placement: tuple[str, str]
    ) -> None:
        """Load the model in `folder`; runs on the inference thread.

        A folder with only a pickle checkpoint is imported into safetensors first, which `cancel`
        can stop; the load itself runs to its end.
        """
        if self._shutting_down.is_set():
            return
        threading.current_thread().name = "inference"  # QThread's Python name is "Dummy-N"

        def progress(step: int, total: int, text: str) -> None:
            self.load_progress.emit(job_id, step, total, text)

        try:
            folder = loadable_folder(folder, progress=progress, cancel=cancel)
            device, precision = placement
            loaded = load_and_place(folder, device, precision, progress=progress)
        except CheckpointImportError as error:
            log.warning("Checkpoint import failed: %s", error)
            self.load_failed.emit(job_id, str(error))
            return
        except ModelLoadError as error:
            log.warning("Model load failed: %s", error)
            self.load_failed.emit(job_id, str(error))
            return
        except Exception as error:  # a bug or an unforeseen library error is reported too
            log.exception("Model load failed unexpectedly for %s", folder)
            self.load_failed.emit(job_id, f"Loading the model in {folder} failed: {error!r}.")
            return
        if cancel.is_set():
            log.info("Model load of %s was cancelled; the loaded model is discarded", folder)
            return
        self._loaded = loaded
        self._cache = loaded.engine.new_cache()
        self._anchor = None
        self.anchor_changed.emit(None)
        self._history = []
        self.model_loaded.emit(job_id, loaded)

    @Slot(int, str, object, object)
    def generate(
        self, job_id: int, text: str, params: SamplingParams, cancel: threading.Event
    ) -> None:
        """Continue `text` with the current model; runs on the inference thread."""
        if self._shutting_down.is_set():
            return
        if cancel.is_set():
            return  # stopped while queued; the controller no longer waits for this job
        loaded = self._loaded
        if loaded is None:
            self.generation_failed.emit(job_id, "No model is loaded. Choose a model folder first.")
            return
        try:
            prompt = build_prompt_with_pins(
                loaded, text, params.max_new_tokens, self._anchor, self._history, self._pins
            )
            self._anchor = prompt.start
            self.anchor_changed.emit(prompt.start)
            self._history = list(prompt.ids)
            self.generation_started.emit(job_id, prompt)
            result = stream_completion(
                loaded,
                prompt,
                params,
                lambda piece: self.text_ready.emit(job_id, piece),
                cancel,
                self._cache,
            )
        except Exception as error:  # reported to the window; the next run starts afresh
            log.exception("Generation job %d failed", job_id)
            self._history = []
            if self._cache is not None:
                self._cache.clear()
            self.generation_failed.emit(
                job_id, f"Generation failed: {type(error).__name__}: {error}"
            )
            return
        if result.text == _spelled(loaded, result.token_ids):
            # The document now ends with exactly this completion, unless the user discards it.
            self._history = [*prompt.ids, *result.token_ids]
        self.generation_finished.emit(job_id, result)

    @Slot(int, str, object, int, object)
    def generate_alternatives(
        self, job_id: int, text: str, params: SamplingParams, count: int, cancel: threading.Event
    ) -> None:
        """Generate `count` alternative completions of `text`, computing its prompt once."""
        if self._shutting_down.is_set() or cancel.is_set():
            return
        loaded = self._loaded
        if loaded is None:
            self.generation_failed.emit(job_id, "No model is loaded. Choose a model folder first.")
            return
        results: list[GenerationResult] = []

        def piece_ready(index: int, piece: str) -> None:
            self.alternative_text.emit(job_id, index, piece)

        try:
            prompt = build_prompt_with_pins(
                loaded, text, params.max_new_tokens, self._anchor, self._history, self._pins
            )
            self._anchor = prompt.start
            self.anchor_changed.emit(prompt.start)
            self._history = list(prompt.ids)
            self.generation_started.emit(job_id, prompt)
            results = stream_alternatives(
                loaded, prompt, params, count, piece_ready, cancel, self._cache
            )
        except Exception as error:  # reported to the window; the next run starts afresh
            log.exception("Alternatives job %d failed", job_id)
            self._history = []
            if self._cache is not None:
                self._cache.clear()
            self.generation_failed.emit(
                job_id, f"Generation failed: {type(error).__name__}: {error}"
            )
            return
        for index, result in enumerate(results):
            self.alternative_finished.emit(job_id, index, result)
        self.alternatives_finished.emit(job_id, results)

    @Slot(str, int, object)
    def prefill(self, text: str, max_new_tokens: int, cancel: threading.Event) -> None:
        """Compute the keys and values of `text`'s prompt window ahead of a generation.

        The window is built as `generate` would build it, so a Generate that follows computes
        only what changed since. `cancel` stops the work between chunks of the prompt; the
        chunks done so far stay in the cache. Failures are logged only: the generation that
        follows computes the prompt again and reports any error itself.
        """
        loaded = self._loaded
        if self._shutting_down.is_set() or cancel.is_set() or loaded is None:
            return
        if self._cache is None:
            return
        try:
            prompt = build_prompt_with_pins(
                loaded, text, max_new_tokens, self._anchor, self._history, self._pins
            )
            self._anchor = prompt.start
            self.anchor_changed.emit(prompt.start)
            self._history = list(prompt.ids)
            reused = self._cache.common_prefix(prompt.ids)
            loaded.engine.prefill(self._cache, prompt.ids, cancel)
            log.debug("Prefilled %d tokens (%d reused)", prompt.used, reused)
            self.prefilled.emit(prompt.used)
        except PrefillCancelled:
            log.debug("Prefill cancelled at %d tokens", self._cache.length)
        except Exception:
            log.exception("Prefill failed; the next generation computes its prompt in full")
            self._cache.clear()

    @Slot()
    def forget_window(self) -> None:
        """Let the next prompt cut a new window, for a document that replaced the last one.

        The cache stays: positions whose tokens still match are reused as always.
        """
        self._anchor = None
        self._history = []
        self.anchor_changed.emit(None)


def _spelled(loaded: LoadedModel, ids: list[int]) -> str:
    text: str = loaded.tokenizer.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return text


class InferenceController(QObject):
    """GUI-side owner of the inference thread; call its methods from the GUI thread only."""

    # LoadedModel, when the current load request succeeds
    model_ready = Signal(object)
    # step, number of steps, description
    load_progress = Signal(int, int, str)
    # message naming the folder and file at fault
    load_failed = Signal(str)
    # Prompt of the current generation
    generation_started = Signal(object)
    # piece of text of the current generation; never emitted after stop()
    text_ready = Signal(str)
    # GenerationResult of the current generation
    generation_finished = Signal(object)
    # message for the user
    generation_failed = Signal(str)
    # prompt tokens computed ahead of the next generation
    prefilled = Signal(int)
    # where the inference thread's prompt window starts now (see `anchor`)
    anchor_changed = Signal(object)
    # index of the alternative, completed piece of its text; never emitted after stop()
    alternative_text = Signal(int, str)
    # index of the alternative, its GenerationResult
    alternative_finished = Signal(int, object)
    # list of GenerationResult of the current alternatives request, also after a stop
    alternatives_finished = Signal(object)

    # Requests to the worker; queued across threads, so they run in order on the inference thread.
    _request_load = Signal(int, object, object, object)
    _request_generate = Signal(int, str, object, object)
    _request_prefill = Signal(str, int, object)
    _request_forget_window = Signal()
    _request_alternatives = Signal(int, str, object, int, object)
    _request_pins = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._shutting_down = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("inference")
        self._worker = InferenceWorker(self._shutting_down)
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)

        self._request_load.connect(self._worker.load)
        self._request_generate.connect(self._worker.generate)
        self._request_prefill.connect(self._worker.prefill)
        self._request_forget_window.connect(self._worker.forget_window)
        self._request_pins.connect(self._worker.set_pins)
        self._request_alternatives.connect(self._worker.generate_alternatives)
        self._worker.load_progress.connect(self._on_load_progress)
        self._worker.model_loaded.connect(self._on_model_loaded)
        self._worker.load_failed.connect(self._on_load_failed)
        self._worker.generation_started.connect(self._on_generation_started)
        self._worker.text_ready.connect(self._on_text_ready)
        self._worker.generation_finished.connect(self._on_generation_finished)
        self._worker.generation_failed.connect(self._on_generation_failed)
        self._worker.prefilled.connect(self.prefilled)
        self._worker.anchor_changed.connect(self._on_anchor_changed)
        self._worker.alternative_text.connect(self._on_alternative_text)
        self._worker.alternative_finished.connect(self._on_alternative_finished)
        self._worker.alternatives_finished.connect(self._on_alternatives_finished)

        self._next_job = 0
        self._load_job: int | None = None
        self._generation_job: int | None = None
        self._stopped_job: int | None = None  # stopped run whose timing may still be reported
        self._latest_generation_job: int | None = None
        self._cancel: threading.Event | None = None
        self._load_cancel: threading.Event | None = None
        self._prefill_cancel: threading.Event | None = None
        self.model: LoadedModel | None = None
        # Where the inference thread's prompt window starts in the text, as its latest request
        # left it: the anchor that its next `build_prompt_with_pins` call gets.
        self.anchor: int | None = None
        # Returns the pinned passages for the prompts, read at each generation and prefill
        # request, so they match the text the request carries.
        self.pin_source: Callable[[], tuple[PinnedPassage, ...]] | None = None
        self._thread.start()

    def _new_job(self) -> int:
        self._next_job += 1
        return self._next_job

    @property
    def is_loading(self) -> bool:
        """True while a model load request is pending."""
        return self._load_job is not None

    @property
    def is_generating(self) -> bool:
        """True from `generate` until the current generation finishes, fails or is stopped."""
        return self._generation_job is not None

    @property
    def latest_generation_job(self) -> int | None:
        """Id of the newest generation request of any kind, or None before the first.

        Generation signals are forwarded only for this request (running, finished or stopped), so
        a caller that kept the id after its own request can tell its own signals apart.
        """
        return self._latest_generation_job

    def load(self, folder: Path, device: str = "auto", precision: str = "fast") -> None:
        """Stop any generation and load the model in `folder` on the inference thread.

        `device` is the user's override ("auto" lets the app choose) and `precision` is "fast"
        or "exact".
        """
        self.stop()
        self.cancel_prefill()
        self.cancel_load()
        self._load_job = self._new_job()
        self._load_cancel = threading.Event()
        self._request_load.emit(
            self._load_job, Path(folder), self._load_cancel, (device, precision)
        )

    def cancel_load(self) -> None:
        """Cancel the current load: an import stops, and its result is dropped either way."""
        if self._load_cancel is not None:
            self._load_cancel.set()
        self._load_cancel = None
        self._load_job = None

    def generate(self, text: str, params: SamplingParams) -> None:
        """Start a generation that continues `text`, stopping the current one first.

        The new request is queued behind the old one on the inference thread, so it starts only
        after the old run has returned.
        """
        self.stop()
        self._prefill_cancel = None  # a running prefill goes on: this generation reuses its work
        self._stopped_job = None
        self._generation_job = self._latest_generation_job = self._new_job()
        self._cancel = threading.Event()
        self._send_pins()
        self._request_generate.emit(self._generation_job, text, params, self._cancel)

    def generate_alternatives(self, text: str, params: SamplingParams, count: int) -> None:
        """Start `count` alternative completions of `text`, stopping the current generation.

        The prompt is computed once for all of them. Their pieces arrive through
        alternative_text, each result through alternative_finished, and the list of results
        through alternatives_finished; generation_started and generation_failed are shared with
        `generate`.
        """
        self.stop()
        self._prefill_cancel = None
        self._stopped_job = None
        self._generation_job = self._latest_generation_job = self._new_job()
        self._cancel = threading.Event()
        self._send_pins()
        self._request_alternatives.emit(self._generation_job, text, params, count, self._cancel)

    def prefill(self, text: str, max_new_tokens: int) -> None:
        """Compute `text`'s prompt window on the inference thread so Generate can start at once.

        Does nothing while a model loads or a generation runs. A newer prefill cancels an older
        one that has not finished.
        """
        if self.model is None or self.is_loading or self.is_generating:
            return
        self.cancel_prefill()
        self._prefill_cancel = threading.Event()
        self._send_pins()
        self._request_prefill.emit(text, max_new_tokens, self._prefill_cancel)

    def _send_pins(self) -> None:
        """Send the current pinned passages ahead of a request; queued signals keep the order."""
        pins = self.pin_source() if self.pin_source is not None else ()
        self._request_pins.emit(pins)

    def forget_window(self) -> None:
        """Make the next request cut a new prompt window: call it when a document is replaced."""
        self.cancel_prefill()
        self.anchor = None
        self._request_forget_window.emit()

    def cancel_prefill(self) -> None:
        """Stop the pending prefill between two chunks; what it computed stays in the cache."""
        if self._prefill_cancel is not None:
            self._prefill_cancel.set()
        self._prefill_cancel = None

    def stop(self) -> None:
        """Stop the current generation; no text of it is delivered after this call.

        Its GenerationResult (stop reason "stopped") still arrives through generation_finished
        unless another generation has started by then.
        """
        if self._cancel is not None:
            self._cancel.set()
        if self._generation_job is not None:
            self._stopped_job = self._generation_job
        self._generation_job = None
        self._cancel = None

    def shutdown(self) -> None:
        """Stop work and end the inference thread, waiting for the current token to finish."""
        self._shutting_down.set()
        self.stop()
        self.cancel_prefill()
        self.cancel_load()
        self._thread.quit()
        self._thread.wait()

    @Slot(object)
    def _on_anchor_changed(self, anchor: int | None) -> None:
        self.anchor = anchor
        self.anchor_changed.emit(anchor)

    @Slot(int, int, int, str)
    def _on_load_progress(self, job_id: int, step: int, total: int, text: str) -> None:
        if job_id == self._load_job:
            self.load_progress.emit(step, total, text)

    @Slot(int, object)
    def _on_model_loaded(self, job_id: int, loaded: LoadedModel) -> None:
        if job_id == self._load_job:
            self._load_job = None
            self.model = loaded
            self.model_ready.emit(loaded)

    @Slot(int, str)
    def _on_load_failed(self, job_id: int, message: str) -> None:
        if job_id == self._load_job:
            self._load_job = None
            self.load_failed.emit(message)

    @Slot(int, object)
    def _on_generation_started(self, job_id: int, prompt: Prompt) -> None:
        if job_id == self._generation_job:
            self.generation_started.emit(prompt)

    @Slot(int, str)
    def _on_text_ready(self, job_id: int, piece: str) -> None:
        if job_id == self._generation_job:
            self.text_ready.emit(piece)

    @Slot(int, object)
    def _on_generation_finished(self, job_id: int, result: GenerationResult) -> None:
        if job_id == self._generation_job:
            self._generation_job = None
            self._cancel = None
            self.generation_finished.emit(result)
        elif job_id == self._stopped_job and self._generation_job is None:
            self._stopped_job = None
            self.generation_finished.emit(result)

    @Slot(int, int, str)
    def _on_alternative_text(self, job_id: int, index: int, piece: str) -> None:
        if job_id == self._generation_job:
            self.alternative_text.emit(index, piece)

    @Slot(int, int, object)
    def _on_alternative_finished(self, job_id: int, index: int, result: GenerationResult) -> None:
        if job_id == self._generation_job or (
            job_id == self._stopped_job and self._generation_job is None
        ):
            self.alternative_finished.emit(index, result)

    @Slot(int, object)
    def _on_alternatives_finished(self, job_id: int, results: list[GenerationResult]) -> None:
        if job_id == self._generation_job:
            self._generation_job = None
            self._cancel = None
            self.alternatives_finished.emit(results)
        elif job_id == self._stopped_job and self._generation_job is None:
            self._stopped_job = None
            self.alternatives_finished.emit(results)

    @Slot(int, str)
    def _on_generation_failed(self, job_id: int, message: str) -> None:
        if job_id == self._generation_job:
            self._generation_job = None
            self._cancel = None
            self.generation_failed.emit(message)
