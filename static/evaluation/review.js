// Keyboard work for reviewers, as annotation tools have it: 1–5 score the highlighted row and move on, ↑/↓ (K/J)
// move, D saves a draft, Ctrl+Enter submits and opens the next review; N opens the next review from the queue.
(function () {
  "use strict";
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) && target.type !== "radio");
  }
  document.addEventListener("DOMContentLoaded", function () {
    var rows = Array.prototype.slice.call(document.querySelectorAll("[data-score-row]"));
    var form = document.getElementById("review-form");
    var current = 0;
    function firstOpen() {
      for (var i = 0; i < rows.length; i++) { if (!rows[i].querySelector("input:checked")) { return i; } }
      return 0;
    }
    function focusRow(index) {
      if (!rows.length) { return; }
      current = Math.max(0, Math.min(rows.length - 1, index));
      rows.forEach(function (row, i) { row.classList.toggle("current", i === current); });
      rows[current].scrollIntoView({block: "nearest"});
    }
    rows.forEach(function (row, i) {
      row.addEventListener("click", function () { focusRow(i); });
    });
    if (rows.length) { focusRow(firstOpen()); }
    document.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && form) {
        var submit = form.querySelector("[data-shortcut-submit]");
        if (submit) { event.preventDefault(); submit.click(); }
        return;
      }
      if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) { return; }
      if (!form) {
        var next = document.querySelector("[data-shortcut-next]");
        if (next && (event.key === "n" || event.key === "N")) { event.preventDefault(); next.click(); }
        return;
      }
      if (/^[1-5]$/.test(event.key) && rows.length) {
        var inputs = rows[current].querySelectorAll("input[type=radio]");
        var choice = inputs[Number(event.key) - 1];
        if (choice && !choice.disabled) {
          event.preventDefault();
          choice.checked = true;
          rows[current].classList.remove("invalid");
          focusRow(current + 1);
        }
      } else if (event.key === "ArrowDown" || event.key === "j") {
        event.preventDefault(); focusRow(current + 1);
      } else if (event.key === "ArrowUp" || event.key === "k") {
        event.preventDefault(); focusRow(current - 1);
      } else if (event.key === "d" || event.key === "D") {
        var draft = form.querySelector("[data-shortcut-draft]");
        if (draft) { event.preventDefault(); draft.click(); }
      }
    });
  });
})();
