// Meridian console: the few things server-rendered HTML cannot do. Loaded as a static
// file (the Content-Security-Policy allows no inline script). It never parses HTML:
// every node it makes is built with createElement/textContent.
"use strict";

// Copy buttons: <button data-copy="text">. navigator.clipboard needs a secure context;
// elsewhere the command's read-only input next to the button is selected instead.
document.addEventListener("click", function (e) {
  var button = e.target.closest ? e.target.closest("button[data-copy]") : null;
  if (!button) return;
  e.preventDefault();
  var text = button.getAttribute("data-copy");
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
  } else {
    var input = button.parentNode.querySelector("input[readonly]");
    if (input) { input.focus(); input.select(); }
  }
});
