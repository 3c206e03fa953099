/* seawall report widget, no dependencies. On the app's page:
 *   <script src="https://seawall.example/ui/widget.js" data-seawall="https://seawall.example"
 *           data-api-key="sw-..."></script>
 * Every element with data-seawall-response-id (the gateway's x-seawall-request-id, a completion id
 * or a review id) gets a "Report this answer" button; the dialog POSTs to /v1/feedback. The AI
 * disclosure and limitations from /v1/seawall/notices go into [data-seawall-notices], else a footer.
 * Optional: data-seawall-user on an answer (the app's user id; seawall keeps only its HMAC). */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.seawallWidget) return;
  var base = (script.getAttribute("data-seawall") || new URL(script.src).origin).replace(/\/+$/, "");
  var key = script.getAttribute("data-api-key");
  var CATEGORIES = [
    ["wrong", "Wrong or misleading"], ["harmful", "Harmful or unsafe"], ["biased", "Biased or offensive"],
    ["privacy", "Reveals private information"], ["other", "Something else"]
  ];
  var dialog, fields = {}, status, sendButton, closeButton, opener, target;

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (name) {
      if (name === "style") node.style.cssText = props.style;
      else if (name === "text") node.textContent = props.text;
      else node.setAttribute(name, props[name]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function field(id, label, control) {
    control.id = id;
    control.style.cssText = "display:block;width:100%;box-sizing:border-box;font:inherit;margin:.2rem 0 .7rem;padding:.35rem";
    fields[id] = control;
    return el("div", {}, [el("label", { "for": id, text: label, style: "font-weight:600" }), control]);
  }

  function build() {
    var select = el("select", {}, CATEGORIES.map(function (c) { return el("option", { value: c[0], text: c[1] }); }));
    status = el("p", { role: "status", "aria-live": "polite", style: "min-height:1.2em" });
    sendButton = el("button", { type: "submit", text: "Send report" });
    closeButton = el("button", { type: "button", text: "Cancel" });
    var form = el("form", { method: "dialog" }, [
      el("h2", { id: "seawall-report-title", text: "Report this answer", style: "margin:0 0 .4rem;font-size:1.2rem" }),
      el("p", { id: "seawall-report-help", text: "Tell us what is wrong with this answer. A person will look at your report.", style: "margin:0 0 .8rem" }),
      field("seawall-category", "What is wrong?", select),
      field("seawall-comment", "Comment (optional)", el("textarea", { rows: "4", maxlength: "4000" })),
      field("seawall-contact", "How can we reach you? (optional)", el("input", { type: "text", maxlength: "320", autocomplete: "email" })),
      status,
      el("div", { style: "display:flex;gap:.5rem;justify-content:flex-end" }, [closeButton, sendButton])
    ]);
    dialog = el("dialog", {
      "class": "seawall-dialog", "aria-labelledby": "seawall-report-title", "aria-describedby": "seawall-report-help",
      style: "max-width:26rem;width:calc(100% - 2rem);border:1px solid #888;border-radius:8px;padding:1rem 1.2rem;font:15px/1.4 system-ui,sans-serif;color:#111;background:#fff"
    }, [form]);
    form.addEventListener("submit", send);
    closeButton.addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () { if (opener) opener.focus(); });
    document.body.appendChild(dialog);
  }

  function open(answer, button) {
    if (!dialog) build();
    opener = button;
    target = answer;
    fields["seawall-category"].value = "wrong";
    fields["seawall-comment"].value = "";
    fields["seawall-contact"].value = "";
    status.textContent = "";
    sendButton.hidden = false;
    sendButton.disabled = false;
    closeButton.textContent = "Cancel";
    dialog.showModal();
    fields["seawall-category"].focus();
  }

  function send(event) {
    event.preventDefault();
    var body = {
      response_id: target.getAttribute("data-seawall-response-id"),
      category: fields["seawall-category"].value,
      comment: fields["seawall-comment"].value
    };
    var contact = fields["seawall-contact"].value.trim();
    if (contact) body.contact = contact;
    var user = target.getAttribute("data-seawall-user");
    if (user) body.user = user;
    var headers = { "content-type": "application/json" };
    if (key) headers.authorization = "Bearer " + key;
    sendButton.disabled = true;
    status.textContent = "Sending…";
    fetch(base + "/v1/feedback", { method: "POST", mode: "cors", credentials: "omit", headers: headers, body: JSON.stringify(body) })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) throw new Error((data.error && data.error.message) || "the server answered " + response.status);
          status.textContent = "Thank you: your report was sent.";
          sendButton.hidden = true;
          closeButton.textContent = "Close";
          opener.textContent = "Reported";
          opener.setAttribute("data-seawall-report", data.id || "");
          closeButton.focus();
        });
      })
      .catch(function (error) {
        sendButton.disabled = false;
        status.textContent = "Your report could not be sent: " + error.message;
      });
  }

  function mark(answer) {
    answer.setAttribute("data-seawall-ready", "");
    var button = el("button", {
      type: "button", "class": "seawall-report-button", "aria-haspopup": "dialog", text: "Report this answer",
      style: "font:inherit;font-size:.85em;margin:.25rem 0;padding:.15rem .5rem;border:1px solid #888;border-radius:4px;background:#fff;color:#333;cursor:pointer"
    });
    button.addEventListener("click", function () { open(answer, button); });
    answer.insertAdjacentElement("afterend", button);
  }

  function scan() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-seawall-response-id]:not([data-seawall-ready])"), mark);
  }

  function notices() {
    fetch(base + "/v1/seawall/notices", { mode: "cors", credentials: "omit" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        var list = el("ul", { style: "margin:.4rem 0;padding-left:1.2rem" }, (data.limitations || []).map(function (notice) {
          return el("li", { "data-notice": notice.id }, [el("strong", { text: notice.title + ": " }), document.createTextNode(notice.text)]);
        }));
        var box = el("details", { "class": "seawall-notices", style: "font:13px/1.4 system-ui,sans-serif;color:#333;margin:.5rem 0" }, [
          el("summary", { text: data.disclosure, style: "cursor:pointer" }), list
        ]);
        var host = document.querySelector("[data-seawall-notices]");
        if (!host) {
          host = el("footer", { "class": "seawall-footer", style: "border-top:1px solid #ddd;padding:.25rem 1rem" });
          document.body.appendChild(host);
        }
        host.appendChild(box);
      })
      .catch(function () { /* the page works without the notices */ });
  }

  function start() {
    scan();
    new MutationObserver(scan).observe(document.body, { childList: true, subtree: true });
    notices();
  }

  window.seawallWidget = { scan: scan };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
