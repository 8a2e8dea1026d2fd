// The Aidbox 2FA demo frontend, without a build step: token in localStorage, JSON calls with a bearer token.
"use strict";

// Not "web": seed/demo.json keeps that one as Aidbox's demo frontend registers it (on :3000).
const CLIENT_ID = "demo-app";
const base = window.location.origin;
const redirectUri = base + "/demo/auth";
const $ = (id) => document.getElementById(id);

function show(id) {
  for (const section of ["signin", "offer", "enroll", "codes", "app"]) $(section).hidden = section !== id;
}

function fail(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function formatError(body) {
  if (body && body.error) return `${body.error_description} (${body.error})`;
  if (body && body.issue) return body.issue[0].diagnostics || body.issue[0].code;
  return "Request failed";
}

async function call(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { "Authorization": "Bearer " + localStorage.getItem("token"), "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) throw Object.assign(new Error(formatError(data)), { status: response.status });
  return data;
}

function authorizeUrl(path) {
  const params = new URLSearchParams({ client_id: CLIENT_ID, response_type: "token", redirect_uri: redirectUri });
  return `${base}${path}?${params}`;
}

async function load() {
  fail("");
  // Back from /auth/authorize: the token is in the fragment.
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("access_token")) {
    localStorage.setItem("token", fragment.get("access_token"));
    history.replaceState(null, "", "/demo");
  } else if (fragment.get("error")) {
    fail(`${fragment.get("error_description") || ""} (${fragment.get("error")})`);
    history.replaceState(null, "", "/demo");
  }
  if (!localStorage.getItem("token")) return show("signin");
  let user;
  try {
    user = await call("GET", "/auth/userinfo");
  } catch (error) {
    localStorage.removeItem("token");
    return show("signin");
  }
  $("who").textContent = user.email || user.id;
  const enabled = Boolean(user.twoFactor && user.twoFactor.enabled);
  $("tfa").textContent = enabled ? "enabled" : "not enabled";
  $("offer-again").hidden = enabled;
  show(enabled || sessionStorage.getItem("skipped") ? "app" : "offer");
}

async function enable() {
  fail("");
  try {
    const { uri } = await call("POST", "/app/auth/two-factor/request", {});
    const response = await fetch(base + "/demo/qr", { method: "POST", body: uri });
    $("qr").innerHTML = await response.text();
    $("secret").textContent = new URL(uri).searchParams.get("secret");
    show("enroll");
    $("token").focus();
  } catch (error) {
    fail(error.message);
  }
}

async function confirm(event) {
  event.preventDefault();
  fail("");
  try {
    const result = await call("POST", "/app/auth/two-factor/confirm", { token: $("token").value.trim() });
    const list = $("code-list");
    list.replaceChildren(...(result.recoveryCodes || []).map((code) => {
      const item = document.createElement("li");
      item.textContent = code;
      return item;
    }));
    if (result.recoveryCodes && result.recoveryCodes.length) show("codes");
    else await load();
  } catch (error) {
    fail(error.message);
  }
}

async function logout() {
  try {
    await call("DELETE", "/Session");
  } finally {
    localStorage.removeItem("token");
    sessionStorage.removeItem("skipped");
    show("signin");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-link").href = authorizeUrl("/auth/authorize");
  $("signup-link").href = authorizeUrl("/auth/signup");
  $("enable").addEventListener("click", enable);
  $("offer-again").addEventListener("click", enable);
  $("skip").addEventListener("click", () => { sessionStorage.setItem("skipped", "1"); load(); });
  $("confirm-form").addEventListener("submit", confirm);
  $("codes-done").addEventListener("click", load);
  $("logout").addEventListener("click", logout);
  load();
});
