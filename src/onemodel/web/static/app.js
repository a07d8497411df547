// onemodel: try the served model in the browser. Vanilla JS, same-origin requests only.
"use strict";

(() => {
  const TOP_K = 5;
  const READY_RETRY_MS = 2000;

  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("model-status"),
    statusText: $("model-status-text"),
    modelName: $("model-name"),
    modelInput: $("model-input"),
    modelClasses: $("model-classes"),
    notReady: $("not-ready"),
    notReadyReason: $("not-ready-reason"),
    form: $("classify-form"),
    dropZone: $("drop-zone"),
    fileInput: $("file-input"),
    preview: $("preview"),
    previewImage: $("preview-image"),
    previewCaption: $("preview-caption"),
    button: $("classify-button"),
    busy: $("busy"),
    errorBox: $("error-box"),
    errorCode: $("error-code"),
    errorMessage: $("error-message"),
    empty: $("results-empty"),
    results: $("results"),
    resultList: $("result-list"),
    resultMeta: $("result-meta"),
  };

  const state = { file: null, previewUrl: null, numClasses: null, busy: false, readyTimer: null };

  // ---- model status (GET /readyz) -------------------------------------------------------

  function setStatus(kind, text) {
    el.status.dataset.state = kind;
    el.statusText.textContent = text;
  }

  async function checkReady() {
    clearTimeout(state.readyTimer);
    let response;
    let body = null;
    try {
      response = await fetch("/readyz", { headers: { Accept: "application/json" }, cache: "no-store" });
      body = await response.json().catch(() => null);
    } catch (error) {
      showNotReady("the web server cannot be reached");
      return scheduleReadyCheck(READY_RETRY_MS);
    }
    if (response.ok && body) {
      showReady(body);
      return;
    }
    const reason = (body && (body.reason || (body.error && body.error.message))) || `HTTP ${response.status}`;
    showNotReady(reason);
    const retryAfter = Number(response.headers.get("Retry-After"));
    scheduleReadyCheck(retryAfter > 0 ? Math.min(retryAfter * 1000, 30000) : READY_RETRY_MS);
  }

  function scheduleReadyCheck(delayMs) {
    state.readyTimer = setTimeout(checkReady, delayMs);
  }

  function showReady(info) {
    const size = Array.isArray(info.input_size) ? info.input_size : null;
    el.modelName.textContent = info.model || "unknown";
    el.modelInput.textContent = size && size.length === 2 ? `${size[1]} × ${size[0]} px` : "–";
    el.modelClasses.textContent = info.num_classes != null ? String(info.num_classes) : "–";
    state.numClasses = Number.isInteger(info.num_classes) ? info.num_classes : null;
    el.notReady.hidden = true;
    setStatus("ready", "Model ready");
  }

  function showNotReady(reason) {
    el.notReadyReason.textContent = reason ? `(${reason})` : "";
    el.notReady.hidden = false;
    setStatus("not-ready", "Model server not ready");
  }

  // ---- choosing an image ----------------------------------------------------------------

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function chooseFile(file) {
    if (!file) return;
    state.file = file;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    el.preview.hidden = false;
    el.preview.classList.remove("preview-broken");
    el.previewImage.src = state.previewUrl;
    el.previewCaption.textContent = `${file.name} · ${formatBytes(file.size)}`;
    el.button.disabled = state.busy;
    hideError();
    clearResults();
  }

  el.previewImage.addEventListener("load", () => {
    const { naturalWidth: w, naturalHeight: h } = el.previewImage;
    if (state.file && w && h) {
      el.previewCaption.textContent = `${state.file.name} · ${w} × ${h} px · ${formatBytes(state.file.size)}`;
    }
  });

  el.previewImage.addEventListener("error", () => {
    if (!state.file) return;
    el.preview.classList.add("preview-broken");
    el.previewCaption.textContent = `${state.file.name} · ${formatBytes(state.file.size)} · the browser cannot preview this file`;
  });

  el.fileInput.addEventListener("change", () => chooseFile(el.fileInput.files[0]));

  ["dragenter", "dragover"].forEach((type) =>
    el.dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      el.dropZone.classList.add("drag-over");
    }),
  );
  ["dragleave", "dragend"].forEach((type) =>
    el.dropZone.addEventListener(type, (event) => {
      if (event.type === "dragleave" && el.dropZone.contains(event.relatedTarget)) return;
      el.dropZone.classList.remove("drag-over");
    }),
  );
  el.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    el.dropZone.classList.remove("drag-over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) chooseFile(files[0]);
  });
  // A file dropped outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // ---- classifying (POST /predict) ------------------------------------------------------

  function setBusy(busy) {
    state.busy = busy;
    el.button.disabled = busy || !state.file;
    el.busy.hidden = !busy;
    el.form.setAttribute("aria-busy", String(busy));
  }

  function hideError() {
    el.errorBox.hidden = true;
    el.errorCode.textContent = "";
    el.errorMessage.textContent = "";
  }

  function showError(code, message, status) {
    el.errorCode.textContent = status ? `${status} ${code}` : code;
    el.errorMessage.textContent = message;
    el.errorBox.hidden = false;
    el.empty.hidden = true;
  }

  function clearResults() {
    el.resultList.replaceChildren();
    el.results.hidden = true;
    el.empty.hidden = !el.errorBox.hidden;
  }

  function percent(score) {
    return `${(score * 100).toFixed(2)}%`;
  }

  function renderResults(body, latencyMs) {
    const rows = body.predictions.map((prediction, rank) => {
      const score = Math.min(Math.max(Number(prediction.score) || 0, 0), 1);
      const item = document.createElement("li");
      item.className = "result-row";
      item.dataset.index = String(prediction.index);
      item.dataset.score = String(prediction.score);

      const label = document.createElement("span");
      label.className = "result-label";
      label.textContent = prediction.label;
      label.title = `${prediction.label} (class index ${prediction.index})`;

      const bar = document.createElement("span");
      bar.className = "result-bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = rank === 0 ? "result-fill top" : "result-fill";
      fill.style.width = `${(score * 100).toFixed(3)}%`; // CSSOM: allowed by the CSP
      bar.append(fill);

      const value = document.createElement("span");
      value.className = "result-score";
      value.textContent = percent(score);

      item.append(label, bar, value);
      return item;
    });
    el.resultList.replaceChildren(...rows);
    el.resultMeta.textContent = `Model ${body.model} · latency ${Math.round(latencyMs)} ms (round trip)`;
    el.resultMeta.dataset.latencyMs = String(Math.round(latencyMs));
    el.empty.hidden = true;
    el.results.hidden = false;
  }

  async function classify() {
    if (!state.file || state.busy) return;
    hideError();
    clearResults();
    setBusy(true);
    const topK = state.numClasses ? Math.min(TOP_K, state.numClasses) : TOP_K;
    const form = new FormData();
    form.append("file", state.file, state.file.name);
    const started = performance.now();
    try {
      let response;
      try {
        response = await fetch(`/predict?top_k=${topK}`, {
          method: "POST",
          body: form,
          headers: { Accept: "application/json" },
        });
      } catch (error) {
        showError("network_error", `The server could not be reached: ${error.message || error}`);
        return;
      }
      const latencyMs = performance.now() - started;
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        if (body && body.error) {
          showError(body.error.code || "error", body.error.message || response.statusText, response.status);
        } else {
          showError("http_error", response.statusText || "the server answered an error", response.status);
        }
        if (response.status === 503) checkReady();
        return;
      }
      if (!body || !Array.isArray(body.predictions)) {
        showError("bad_response", "The server answered without predictions.", response.status);
        return;
      }
      renderResults(body, latencyMs);
    } finally {
      setBusy(false);
    }
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    classify();
  });

  setBusy(false);
  checkReady();
})();
