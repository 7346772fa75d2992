// Staff chat: POST the message to the console, which relays it to the gateway and streams the answer
// back as newline-delimited JSON ({"delta"}, then {"done"} or {"error": {code, message}}).
"use strict";
(function () {
  const form = document.getElementById("chat-form");
  if (!form) return;
  const log = document.getElementById("chat-log");
  const alertBox = document.getElementById("chat-error");
  const button = form.querySelector("button[type=submit]");

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    div.textContent = text;
    log.appendChild(div);
    return div;
  }

  function fail(code, message) {
    alertBox.dataset.code = code;
    alertBox.textContent = "";
    const strong = document.createElement("strong");
    strong.textContent = message + " ";
    const tag = document.createElement("code");
    tag.textContent = code;
    alertBox.append(strong, tag);
    alertBox.hidden = false;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    alertBox.hidden = true;
    const body = new FormData(form);
    const text = String(body.get("text") || "");
    button.disabled = true;
    try {
      const response = await fetch(form.action, { method: "POST", body: body, credentials: "same-origin" });
      if (!response.ok) {
        let error = { code: "chat.http_" + response.status, message: "The console refused the message." };
        try { error = (await response.json()).error; } catch (e) { /* keep the generic one */ }
        fail(error.code, error.message);
        return;
      }
      bubble("user", text);
      form.reset();
      const answer = bubble("assistant", "");
      answer.setAttribute("aria-busy", "true");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffered += decoder.decode(chunk.value, { stream: true });
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const event = JSON.parse(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
          if (event.delta) {
            answer.textContent += event.delta;
            answer.dataset.chunks = String(Number(answer.dataset.chunks || 0) + 1);
          }
          if (event.error) fail(event.error.code, event.error.message);
          if (event.done) answer.dataset.done = "true";
        }
      }
      answer.removeAttribute("aria-busy");
    } catch (e) {
      fail("chat.network", "The connection to the console was lost.");
    } finally {
      button.disabled = false;
    }
  });
})();
