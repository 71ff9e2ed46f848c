// The call card's map: every location with its accuracy circle, drawn by the vendored Leaflet.
// Tiles come from the site's tile server; with none reachable the circles and markers still draw.
function drawMap(box) {
  if (!box || typeof window.L === "undefined") { return; }
  const L = window.L;
  const points = JSON.parse(box.dataset.locations || "[]").filter((l) => l.latitude != null && l.longitude != null);
  if (!points.length) { box.remove(); return; }
  const map = L.map(box, {attributionControl: true, zoomControl: true});
  L.tileLayer(box.dataset.tiles, {maxZoom: 19, attribution: box.dataset.attribution}).addTo(map);
  const bounds = [];
  points.forEach((l, i) => {
    const at = [l.latitude, l.longitude];
    const label = l.source + (l.radius_m != null ? " ±" + Math.round(l.radius_m) + " m" : "") +
      " · " + l.age_s + " s";
    if (l.radius_m != null && l.radius_m > 0) {
      L.circle(at, {radius: l.radius_m, weight: 1, color: i === 0 ? "#b00020" : "#555",
        fillOpacity: 0.12, className: "loc-circle"}).addTo(map);
    }
    L.circleMarker(at, {radius: 6, weight: 2, color: "#fff", fillColor: i === 0 ? "#b00020" : "#555",
      fillOpacity: 1, className: "loc-marker"}).bindTooltip(label).addTo(map);
    bounds.push(at);
    if (l.radius_m != null) {
      const lat = l.radius_m / 111320;
      const lon = lat / Math.max(0.1, Math.cos(l.latitude * Math.PI / 180));
      bounds.push([l.latitude - lat, l.longitude - lon], [l.latitude + lat, l.longitude + lon]);
    }
  });
  map.fitBounds(bounds, {maxZoom: 17, padding: [10, 10]});
  box.dataset.drawn = String(points.length);
}

document.addEventListener("card-loaded", () => drawMap(document.getElementById("map")));
