// ktmail web pages: small hints on top of forms that work without script.
// Texts come from data- attributes that the server wrote in the page's
// language; nothing here talks to the network.
"use strict";

function passwordStrength(value) {
  if (!value) return "";
  var classes = 0;
  if (/[a-zåäö]/.test(value)) classes++;
  if (/[A-ZÅÄÖ]/.test(value)) classes++;
  if (/[0-9]/.test(value)) classes++;
  if (/[^A-Za-z0-9åäöÅÄÖ]/.test(value)) classes++;
  var words = value.trim().split(/\s+/).length;
  var score = 0;
  if (value.length >= 8) score++;
  if (value.length >= 12) score++;
  if (value.length >= 16 || words >= 3) score++;
  if (classes >= 3) score++;
  if (/^(.)\1+$/.test(value) || /^(1234|qwer|pass|lösen|salas)/i.test(value)) score = 0;
  return score <= 1 ? "weak" : score === 2 ? "fair" : "good";
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-strength]").forEach(function (input) {
    var out = document.getElementById(input.getAttribute("data-strength"));
    if (!out) return;
    input.addEventListener("input", function () {
      var level = passwordStrength(input.value);
      out.className = "strength " + level;
      out.textContent = level ? out.getAttribute("data-" + level) || "" : "";
    });
  });
  document.querySelectorAll("input[data-same-as]").forEach(function (input) {
    var first = document.getElementById(input.getAttribute("data-same-as"));
    if (!first) return;
    var check = function () {
      input.setCustomValidity(input.value && input.value !== first.value
        ? input.getAttribute("data-differ") || "≠" : "");
    };
    input.addEventListener("input", check);
    first.addEventListener("input", check);
  });
  var summary = document.getElementById("form-errors");
  if (summary) summary.focus();
});

// --- webmail: select all, confirmations, attachments, keyboard ---------------
document.documentElement.classList.add("js");

function typingIn(element) {
  if (!element) return false;
  var tag = element.tagName;
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || element.isContentEditable;
}

document.addEventListener("DOMContentLoaded", function () {
  // on a small screen the folder list starts folded
  var menu = document.querySelector("details.folder-menu");
  if (menu && window.matchMedia("(max-width: 56rem)").matches) menu.open = false;

  var all = document.getElementById("select-all");
  if (all) {
    all.hidden = false;
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="uid"][type="checkbox"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  // buttons that destroy something ask first
  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // choosing files attaches them at once (the form keeps what was typed)
  document.querySelectorAll("input[type=file][data-autosubmit]").forEach(function (input) {
    input.addEventListener("change", function () {
      var total = 0;
      for (var i = 0; i < input.files.length; i++) total += input.files[i].size;
      var budget = parseInt(input.getAttribute("data-budget") || "0", 10);
      if (total > budget) {
        input.setCustomValidity(input.getAttribute("data-too-big") || "");
        input.reportValidity();
        input.value = "";
        input.setCustomValidity("");
        return;
      }
      var button = document.getElementById("attach-button");
      if (button && input.files.length) button.click();
    });
  });

  // Ctrl+Enter sends
  document.querySelectorAll("form[data-ctrl-enter]").forEach(function (form) {
    form.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        var button = document.getElementById(form.getAttribute("data-ctrl-enter"));
        if (button && !button.disabled) { event.preventDefault(); button.click(); }
      }
    });
  });

  // keyboard: j/k move in the list, o/Enter open, x select; elements with
  // data-key are pressed by their key (r reply, c write, # delete, ...)
  var rows = Array.prototype.slice.call(document.querySelectorAll("table.messages tbody tr"));
  var current = -1;
  function mark(index) {
    if (!rows.length) return;
    if (current >= 0) rows[current].classList.remove("current-row");
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows[current].classList.add("current-row");
    rows[current].scrollIntoView({block: "nearest"});
  }
  var help = null;
  function toggleHelp() {
    if (help) { help.remove(); help = null; return; }
    var source = document.getElementById("keyboard-help");
    if (!source) return;
    help = source.content ? source.content.firstElementChild.cloneNode(true) : null;
    if (help) document.body.appendChild(help);
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typingIn(event.target)) return;
    var key = event.key;
    if (key === "?") { toggleHelp(); event.preventDefault(); return; }
    if (key === "Escape" && help) { toggleHelp(); return; }
    if (rows.length && (key === "j" || key === "k")) {
      mark(current + (key === "j" ? 1 : -1)); event.preventDefault(); return;
    }
    if (rows.length && current >= 0 && (key === "o" || key === "Enter")) {
      var link = rows[current].querySelector("a.open");
      if (link) { link.click(); event.preventDefault(); }
      return;
    }
    if (rows.length && current >= 0 && key === "x") {
      var box = rows[current].querySelector('input[name="uid"]');
      if (box) box.checked = !box.checked;
      event.preventDefault();
      return;
    }
    var target = document.querySelector('[data-key="' + (key === '"' ? '\\"' : key) + '"]');
    if (!target) return;
    event.preventDefault();
    if (target.tagName === "INPUT") target.focus(); else target.click();
  });
});
