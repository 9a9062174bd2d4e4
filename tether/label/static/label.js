// tether label: the page's only script. Every text from the server is shown with
// textContent, never parsed as HTML, so a response containing markup stays text.
"use strict";

(() => {
  const token = document.querySelector('meta[name="tether-token"]').content;
  const $ = (id) => document.getElementById(id);
  const KEY_CHOICES = { a: "left", b: "right", t: "tie", x: "both_bad", s: "skip" };
  const CHOICE_NAMES = {
    left: "left is better", right: "right is better", tie: "tie", both_bad: "both bad", skip: "skipped",
  };
  let state = null;
  let busy = false;

  async function call(path, body) {
    const response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: { "X-Tether-Token": token, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }

  function say(message, isError = false) {
    $("status").textContent = message;
    $("status").classList.toggle("error", isError);
  }

  function setBusy(value) {
    busy = value;
    const hasItem = Boolean(state && state.item);
    document.querySelectorAll("button[data-choice]").forEach((button) => {
      button.disabled = busy || !hasItem;
    });
    $("undo").disabled = busy || !(state && state.last);
  }

  function render(next) {
    const changedItem = !state || !next.item || !state.item
      || state.item.id !== next.item.id || state.item.repeat !== next.item.repeat;
    state = next;
    $("progress").max = Math.max(next.total, 1);
    $("progress").value = next.done;
    $("progress-text").textContent = `${next.done} of ${next.total}`;
    $("labeler").textContent = `labeler: ${next.labeler}`;
    $("pair").hidden = next.item === null;
    $("finished").hidden = next.item !== null;
    if (next.item === null) {
      $("finished-text").textContent =
        `All ${next.total} pairs are answered; the answers are in ${next.out}. ` +
        "Close this page, or press U to undo the last answer.";
    } else if (changedItem) {
      $("prompt").textContent = next.item.prompt;
      $("left").textContent = next.item.left;
      $("right").textContent = next.item.right;
      for (const id of ["prompt", "left", "right"]) $(id).scrollTop = 0;
      $("reason").value = "";
    }
    setBusy(busy);
  }

  async function send(path, body, describe) {
    if (busy) return;
    setBusy(true);
    try {
      const result = await call(path, body);
      render(result);
      say(describe(result));
    } catch (error) {
      say(`Not saved: ${error.message}`, true);
    } finally {
      setBusy(false);
    }
  }

  function answer(choice) {
    if (!state || !state.item) return;
    const item = state.item;
    const reason = $("reason").value.trim();
    send("/api/answer",
      { id: item.id, repeat: item.repeat, choice, order: item.order, reason: reason || null },
      (result) => `Saved: ${CHOICE_NAMES[result.saved.choice]}` + (result.duplicate ? " (already answered)" : "."));
  }

  function undo() {
    if (!state || !state.last) return;
    send("/api/undo", state.last, () => "Undone: answer this pair again.");
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === $("reason")) {
      if (event.key === "Escape" || event.key === "Enter") {
        event.preventDefault();
        $("reason").blur();
      }
      return;
    }
    const key = event.key.toLowerCase();
    if (key in KEY_CHOICES) {
      event.preventDefault();
      answer(KEY_CHOICES[key]);
    } else if (key === "u") {
      event.preventDefault();
      undo();
    }
  });
  document.querySelectorAll("button[data-choice]").forEach((button) => {
    button.addEventListener("click", () => answer(button.dataset.choice));
  });
  $("undo").addEventListener("click", undo);

  call("/api/next").then(render).catch((error) => say(`Cannot load: ${error.message}`, true));
})();
