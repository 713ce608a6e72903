// The asr page: upload or record audio, POST it to /v1/audio/transcriptions (verbose_json with
// word times), show the words, highlight each while the audio plays, offer srt/vtt downloads.
"use strict";
const $ = (id) => document.getElementById(id);
let modelId = "";
let words = [];
let recorder = null;

function show(el, on) { el.hidden = !on; }
function setStatus(text) { $("status").textContent = text; }
function showError(msg) { $("error").textContent = msg; show($("error"), !!msg); }

async function init() {
  try {
    const models = await (await fetch("/v1/models")).json();
    modelId = models.data[0].id;
    $("model").textContent = modelId;
    const h = await (await fetch("/health")).json();
    $("limits").textContent = `Language ${h.language} · up to ${h.limits.max_upload_mb} MB and ` +
      `${h.limits.max_audio_seconds} s of audio per file`;
  } catch (e) {
    showError("cannot reach the server: " + e);
  }
}

async function transcribe(file) {
  showError("");
  show($("result"), false);
  $("transcript").dataset.state = "working";
  setStatus(`Transcribing ${file.name}…`);
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(file);
  show(player, true);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", modelId);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "word");
  form.append("timestamp_granularities[]", "segment");
  const t0 = performance.now();
  let body;
  try {
    const r = await fetch("/v1/audio/transcriptions", { method: "POST", body: form });
    body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
  } catch (e) {
    setStatus("");
    $("transcript").dataset.state = "error";
    showError(e.message || String(e));
    return;
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(2);
  render(body, file.name, secs);
}

function render(body, name, secs) {
  const box = $("transcript");
  box.textContent = "";
  words = body.words || [];
  words.forEach((w, i) => {
    const s = document.createElement("span");
    s.className = "word" + (w.confidence != null && w.confidence < 0.5 ? " low" : "");
    s.textContent = w.word;
    s.dataset.start = w.start;
    s.dataset.end = w.end;
    s.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s` +
      (w.confidence != null ? `, confidence ${w.confidence.toFixed(2)}` : "");
    s.addEventListener("click", () => { $("player").currentTime = w.start; $("player").play(); });
    box.appendChild(s);
    if (i < words.length - 1) box.appendChild(document.createTextNode(" "));
  });
  if (!words.length) box.textContent = body.text || "(no speech recognised)";
  box.dataset.state = "done";
  $("summary").textContent = `${words.length} words · ${body.duration.toFixed(2)} s of audio · ` +
    `transcribed in ${secs} s`;
  const stem = name.replace(/\.[^.]*$/, "") || "transcript";
  link($("dl-srt"), subtitles(body.segments || [], "srt"), "application/x-subrip", stem + ".srt");
  link($("dl-vtt"), subtitles(body.segments || [], "vtt"), "text/vtt", stem + ".vtt");
  link($("dl-json"), JSON.stringify(body, null, 1), "application/json", stem + ".json");
  setStatus("");
  show($("result"), true);
}

function link(a, text, type, name) {
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
}

// Same layout as asr.subtitles.render (the segments are its cues).
function stamp(t, sep) {
  let ms = Math.round(Math.max(0, t) * 1000);
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(h, 2)}:${p(m, 2)}:${p(s, 2)}${sep}${p(ms, 3)}`;
}

function subtitles(segments, fmt) {
  const sep = fmt === "srt" ? "," : ".";
  const lines = fmt === "vtt" ? ["WEBVTT", ""] : [];
  segments.forEach((seg, i) => {
    if (fmt === "srt") lines.push(String(i + 1));
    lines.push(`${stamp(seg.start, sep)} --> ${stamp(seg.end, sep)}`, seg.text, "");
  });
  return lines.join("\n");
}

function highlight() {
  const t = $("player").currentTime;
  let cur = -1;
  for (let i = 0; i < words.length; i++) if (words[i].start <= t) cur = i;
  if (cur >= 0 && t > words[cur].end + 0.3) cur = -1;  // in a pause: nothing lit
  document.querySelectorAll("#transcript .word").forEach((el, i) => el.classList.toggle("active", i === cur));
  if (!$("player").paused) requestAnimationFrame(highlight);
}

// Microphone: record with MediaRecorder, decode in the browser, upload as 16-bit WAV (every
// browser's recording container differs; WAV is read everywhere).
async function toggleRecord() {
  const btn = $("record");
  if (recorder) { recorder.stop(); return; }
  showError("");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError("no microphone: " + e.message);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    btn.textContent = "Record";
    btn.classList.remove("recording");
    const blob = new Blob(chunks, { type: chunks.length ? chunks[0].type : "audio/webm" });
    try {
      const ctx = new AudioContext();
      const audio = await ctx.decodeAudioData(await blob.arrayBuffer());
      ctx.close();
      transcribe(new File([wav(audio)], "recording.wav", { type: "audio/wav" }));
    } catch (e) {
      showError("cannot decode the recording: " + e.message);
    }
  };
  recorder.start();
  btn.textContent = "Stop";
  btn.classList.add("recording");
  setStatus("Recording…");
}

function wav(audio) {
  const n = audio.length, rate = audio.sampleRate, ch = audio.numberOfChannels;
  const mono = new Float32Array(n);
  for (let c = 0; c < ch; c++) audio.getChannelData(c).forEach((v, i) => { mono[i] += v / ch; });
  const buf = new DataView(new ArrayBuffer(44 + 2 * n));
  const str = (o, s) => [...s].forEach((c, i) => buf.setUint8(o + i, c.charCodeAt(0)));
  str(0, "RIFF"); buf.setUint32(4, 36 + 2 * n, true); str(8, "WAVE"); str(12, "fmt ");
  buf.setUint32(16, 16, true); buf.setUint16(20, 1, true); buf.setUint16(22, 1, true);
  buf.setUint32(24, rate, true); buf.setUint32(28, 2 * rate, true); buf.setUint16(32, 2, true);
  buf.setUint16(34, 16, true); str(36, "data"); buf.setUint32(40, 2 * n, true);
  mono.forEach((v, i) => buf.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, v)) * 32767, true));
  return buf.buffer;
}

$("file").addEventListener("change", (e) => { if (e.target.files.length) transcribe(e.target.files[0]); });
$("record").addEventListener("click", toggleRecord);
$("player").addEventListener("play", () => requestAnimationFrame(highlight));
$("player").addEventListener("seeked", highlight);
$("player").addEventListener("timeupdate", highlight);
if (!window.MediaRecorder || !navigator.mediaDevices) $("record").disabled = true;
init();
