// report.html (asr.report): filters on the utterance table, by speaker and by text, and one
// player at a time. Plain JS inlined into the page: it must work offline, from a file: URL.
(function () {
  "use strict";
  const table = document.getElementById("utts");
  if (!table) return;
  const rows = Array.from(table.tBodies[0].rows).map(function (tr) {
    return { tr: tr, speaker: tr.dataset.speaker, ref: tr.dataset.ref.toLowerCase(),
             hyp: tr.dataset.hyp.toLowerCase() };
  });
  const select = document.getElementById("f-speaker");
  const search = document.getElementById("f-text");
  const shown = document.getElementById("f-shown");

  // the speaker list comes from the rows themselves: option i + 1 is speakers[i]
  const counts = new Map();
  rows.forEach(function (r) { counts.set(r.speaker, (counts.get(r.speaker) || 0) + 1); });
  const speakers = Array.from(counts.keys()).sort();
  speakers.forEach(function (s) {
    const o = document.createElement("option");
    o.textContent = (s === "" ? "(none)" : s) + " (" + counts.get(s) + ")";
    select.appendChild(o);
  });

  function apply() {
    const spk = select.selectedIndex > 0 ? speakers[select.selectedIndex - 1] : null;
    const q = search.value.trim().toLowerCase();
    let n = 0;
    rows.forEach(function (r) {
      const keep = (spk === null || r.speaker === spk) &&
        (q === "" || r.ref.indexOf(q) >= 0 || r.hyp.indexOf(q) >= 0);
      r.tr.hidden = !keep;
      if (keep) n += 1;
    });
    shown.textContent = n + " of " + rows.length + " shown";
  }
  select.addEventListener("change", apply);
  search.addEventListener("input", apply);
  apply();

  // starting one player pauses the others
  document.addEventListener("play", function (ev) {
    document.querySelectorAll("audio").forEach(function (a) { if (a !== ev.target) a.pause(); });
  }, true);
})();
