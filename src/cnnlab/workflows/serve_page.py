"""The page `cnnlab serve` shows: drop images (or pick them), see each one's top classes as bars and its Grad-CAM."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cnnlab: {title}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
  #drop {{ border: 3px dashed #888; border-radius: 1rem; padding: 2rem; text-align: center; }}
  #drop.over {{ border-color: #1a73e8; background: #eef4fd; }}
  .result {{ display: flex; gap: 1.5rem; margin: 1.5rem 0; padding-bottom: 1rem; border-bottom: 1px solid #ddd; }}
  .result img {{ image-rendering: pixelated; max-width: 224px; }}
  .bars {{ flex: 1; }}
  .bar {{ display: flex; align-items: center; gap: .5rem; margin: .25rem 0; }}
  .bar .label {{ width: 9rem; text-align: right; }}
  .bar .fill {{ background: #1a73e8; height: 1.1rem; }}
  .error {{ color: #b00020; }}
  .note {{ color: #666; font-style: italic; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{classes} classes; images are resized to {width}x{height}. Uploads up to {limit_mb:g} MB.</p>
<div id="drop">Drop images here, or <input type="file" id="files" accept="image/*" multiple></div>
<div id="results"></div>
<script>
const drop = document.getElementById("drop");
const results = document.getElementById("results");
function el(tag, cls, text) {{
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}}
function show(result) {{
  const box = el("div", "result");
  box.dataset.file = result.file;
  const bars = el("div", "bars");
  bars.appendChild(el("h3", "file", result.file));
  if (result.error) {{
    bars.appendChild(el("p", "error", result.error));
  }} else {{
    bars.appendChild(el("p", "top-class", result.top[0].class));
    for (const t of result.top) {{
      const bar = el("div", "bar");
      bar.appendChild(el("span", "label", t.class));
      const fill = el("span", "fill");
      fill.style.width = (t.probability * 20) + "rem";
      bar.appendChild(fill);
      bar.appendChild(el("span", "value", (100 * t.probability).toFixed(1) + "%"));
      bars.appendChild(bar);
    }}
    if (result.grad_cam) {{
      const img = el("img", "grad-cam");
      img.src = result.grad_cam;
      img.alt = "Grad-CAM of " + result.file;
      box.appendChild(img);
    }} else {{
      bars.appendChild(el("p", "note", result.grad_cam_note));
    }}
  }}
  box.appendChild(bars);
  results.prepend(box);
}}
async function send(files) {{
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  const response = await fetch("api/predict", {{ method: "POST", body: form }});
  const body = await response.json();
  if (!response.ok) {{
    show({{ file: "upload", error: body.error }});
    return;
  }}
  body.results.forEach(show);
}}
document.getElementById("files").addEventListener("change", e => send(e.target.files));
drop.addEventListener("dragover", e => {{ e.preventDefault(); drop.classList.add("over"); }});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {{
  e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files);
}});
</script>
</body>
</html>
"""
