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
