// carebus dashboard: polls /api/status and renders it. Plain JS, no build step.
// Every value is written with textContent, never as HTML.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const intervalMs = Math.max(500, Number(params.get("interval")) || 2000);

  function ago(iso, now) {
    if (!iso) return "never";
    const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
    if (s < 120) return s + "s ago";
    if (s < 7200) return Math.floor(s / 60) + "m ago";
    if (s < 172800) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }

  function every(seconds) {
    if (seconds == null) return "–";
    if (seconds % 86400 === 0) return seconds / 86400 + "d";
    if (seconds % 3600 === 0) return seconds / 3600 + "h";
    if (seconds % 60 === 0) return seconds / 60 + "m";
    return seconds + "s";
  }

  function cell(row, value, numeric) {
    const td = document.createElement("td");
    td.textContent = String(value);
    if (numeric) td.className = "num";
    row.appendChild(td);
    return td;
  }

  function fill(tableId, items, render) {
    const body = document.querySelector("#" + tableId + " tbody");
    const rows = items.map(function (item) {
      const tr = document.createElement("tr");
      render(tr, item);
      return tr;
    });
    body.replaceChildren.apply(body, rows);
  }

  function setText(id, value) {
    document.getElementById(id).textContent = String(value);
  }

  function render(data) {
    const now = Date.parse(data.generated_at);
    setText("generated-at", data.generated_at);
    setText("since", data.since);
    const feeds = data.feeds;
    setText("received-total", feeds.reduce(function (n, f) { return n + f.messages; }, 0));
    setText("quiet-total", feeds.filter(function (f) { return f.quiet; }).length);
    setText("deadletters-total", data.deadletters.total);
    setText("alerts-total", data.alerts.total);
    setText("lag-total", data.lag.reduce(function (n, g) { return n + g.lag; }, 0));

    fill("feeds", feeds, function (tr, f) {
      tr.dataset.provider = f.provider;
      if (f.quiet) tr.className = "quiet";
      cell(tr, f.provider).className = "provider";
      cell(tr, f.messages, true).classList.add("messages");
      cell(tr, f.rate_per_minute.toFixed(1), true).classList.add("rate");
      cell(tr, f.rejected, true).classList.add("rejected");
      cell(tr, ago(f.last_seen, now)).className = "last-seen";
      cell(tr, every(f.expected_interval_s)).className = "expected";
      cell(tr, f.quiet ? "QUIET" : "ok").className = "state";
    });
    fill("deadletters", data.deadletters.reasons, function (tr, r) {
      tr.dataset.reason = r.reason;
      cell(tr, r.reason);
      cell(tr, r.count, true).classList.add("count");
    });
    fill("alerts", data.alerts.rules, function (tr, r) {
      tr.dataset.rule = r.rule;
      cell(tr, r.rule);
      cell(tr, r.count, true).classList.add("count");
    });
    fill("lag", data.lag, function (tr, g) {
      cell(tr, g.group);
      cell(tr, g.topic);
      cell(tr, g.partition, true);
      cell(tr, g.committed, true);
      cell(tr, g.end, true);
      cell(tr, g.lag, true).classList.add("lag");
    });
    fill("topics", data.topics, function (tr, t) {
      tr.dataset.topic = t.topic;
      cell(tr, t.topic);
      cell(tr, t.partitions, true);
      cell(tr, t.total, true).classList.add("total");
    });

    const badge = document.getElementById("connection");
    const ok = data.collector && data.collector.connected;
    badge.textContent = ok ? "live" : "Kafka: " + ((data.collector && data.collector.error) || "not connected");
    badge.className = "badge " + (ok ? "ok" : "bad");
  }

  function poll() {
    fetch("/api/status", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (err) {
        const badge = document.getElementById("connection");
        badge.textContent = "dashboard unreachable (" + err.message + ")";
        badge.className = "badge bad";
      })
      .finally(function () { window.setTimeout(poll, intervalMs); });
  }

  poll();
})();
