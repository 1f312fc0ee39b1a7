// The console's and the portal's one script (no inline script anywhere: the pages' policy
// forbids it). Copy buttons: <button data-copy="ID"> copies the text of the element ID.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  var status = button.parentElement.querySelector(".copied");
  if (!source) return;
  var text = source.textContent.trim();
  var done = function (message) { if (status) status.textContent = message; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(
      function () { done("Copied"); },
      function () { done("Select the key and copy it"); }
    );
  } else {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    done("Selected: press Ctrl+C");
  }
});
