// The glasses display of the /ui/ pages: draws one layout object (PROTOCOL §7) into an element,
// as green text on black. Text is always set as text, never as HTML.
"use strict";

(function () {
  const timers = new WeakMap();

  function div(cls, text) {
    const d = document.createElement("div");
    if (cls) d.className = cls;
    if (text !== undefined) d.textContent = String(text);
    return d;
  }

  function str(v) {
    return typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v);
  }

  // A bitmap as the SDK sends it (base64 of a BMP, or hex), as an image source.
  function bitmapSrc(data) {
    let s = str(data).trim();
    if (/^[0-9a-fA-F]+$/.test(s) && s.length % 2 === 0) {
      let bin = "";
      for (let i = 0; i < s.length; i += 2) bin += String.fromCharCode(parseInt(s.slice(i, i + 2), 16));
      s = btoa(bin);
    }
    return "data:image/bmp;base64," + s;
  }

  function bitmap(data) {
    const img = document.createElement("img");
    img.className = "bitmap";
    img.alt = "bitmap";
    img.src = bitmapSrc(data);
    return img;
  }

  // Draw `layout` into `el` (cleared first); `view` is shown as a tag when given.
  function renderLayout(el, layout, view) {
    const t = timers.get(el);
    if (t) { clearInterval(t); timers.delete(el); }
    el.textContent = "";
    if (view) el.appendChild(div("view-tag", view));
    if (!layout || typeof layout !== "object") {
      el.appendChild(div("lt empty", "nothing on screen"));
      el.dataset.layout = "";
      return;
    }
    const type = str(layout.layoutType);
    el.dataset.layout = type;
    let body;
    switch (type) {
      case "text_wall":
      case "text_line":
        body = div("lt lt-text", layout.text);
        break;
      case "text_rows": {
        body = div("lt lt-rows");
        const rows = Array.isArray(layout.text) ? layout.text : [layout.text];
        for (const r of rows) body.appendChild(div("lt-row", str(r)));
        break;
      }
      case "double_text_wall": {
        body = div("lt lt-split");
        body.appendChild(div("lt-top", layout.topText));
        body.appendChild(div("lt-bottom", layout.bottomText));
        break;
      }
      case "dashboard_card": {
        body = div("lt lt-card");
        body.appendChild(div("lt-left", layout.leftText));
        body.appendChild(div("lt-right", layout.rightText));
        break;
      }
      case "reference_card": {
        body = div("lt lt-ref");
        body.appendChild(div("lt-title", layout.title));
        body.appendChild(div("lt-text", layout.text));
        break;
      }
      case "bitmap_view":
        body = div("lt lt-bitmap");
        body.appendChild(bitmap(layout.data));
        break;
      case "bitmap_animation": {
        body = div("lt lt-bitmap");
        const frames = Array.isArray(layout.frames) ? layout.frames : [];
        if (frames.length) {
          const img = bitmap(frames[0]);
          body.appendChild(img);
          let i = 0;
          const every = Math.max(50, Number(layout.interval) || 1650);
          const id = setInterval(() => {
            i += 1;
            if (i >= frames.length) {
              if (layout.repeat === false) { clearInterval(id); return; }
              i = 0;
            }
            img.src = bitmapSrc(frames[i]);
          }, every);
          timers.set(el, id);
        }
        break;
      }
      case "clear_view":
        body = div("lt empty", "");
        break;
      default:
        body = div("lt", "[" + (type || "unknown layout") + "]\n" + JSON.stringify(layout));
    }
    if (body.textContent === "" && !body.querySelector("img")) {
      body.className += " empty";
    }
    el.appendChild(body);
  }

  window.renderLayout = renderLayout;
})();
