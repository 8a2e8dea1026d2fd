// The browser half of the passkey ceremonies (fhirauth/http/webauthn_pages.py). A form with
// data-passkey="register|verify|confirm|sign-in" gets the options from the server, asks the
// authenticator, puts its answer in the form's hidden `credential` field and is submitted as usual.
(() => {
  "use strict";
  const toB64url = (buffer) =>
    btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const fromB64url = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  };

  // PublicKeyCredential.toJSON() where the browser lacks it: every binary field as base64url.
  const credentialJSON = (credential) => {
    const r = credential.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      response.userHandle = r.userHandle ? toB64url(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response,
    };
  };

  const ceremony = async (form) => {
    const purpose = form.dataset.passkey;
    const body = new URLSearchParams({ csrf: form.elements.csrf.value, purpose });
    const answer = await fetch("/auth/two-factor/passkeys/options", { method: "POST", body, credentials: "same-origin" });
    const options = await answer.json();
    if (!answer.ok) throw new Error(options.error_description || "The passkey could not be used.");
    const publicKey = options.publicKey;
    publicKey.challenge = fromB64url(publicKey.challenge);
    let credential;
    if (purpose === "register") {
      publicKey.user.id = fromB64url(publicKey.user.id);
      for (const c of publicKey.excludeCredentials || []) c.id = fromB64url(c.id);
      credential = await navigator.credentials.create({ publicKey });
    } else {
      for (const c of publicKey.allowCredentials || []) c.id = fromB64url(c.id);
      credential = await navigator.credentials.get({ publicKey });
    }
    form.elements.credential.value = JSON.stringify(credentialJSON(credential));
    form.submit();
  };

  for (const form of document.querySelectorAll("form[data-passkey]")) {
    if (!window.PublicKeyCredential) {
      form.hidden = true;
      continue;
    }
    form.addEventListener("submit", (event) => {
      if (form.elements.credential.value) return;
      event.preventDefault();
      const status = form.querySelector(".passkey-status");
      ceremony(form).catch((error) => {
        if (status) {
          status.textContent = error.name === "NotAllowedError" ? "The passkey was not used." : error.message;
          status.hidden = false;
        }
      });
    });
  }
})();
