// Portico's one script (the CSP allows no inline script): the sign-in links' "Continue" button,
// copy buttons, and payment progress pages that move on when the charge ends.
// Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A sign-in link's page continues with a POST only when the person presses "Continue": mail
  // scanners open links, and some run their scripts, but none presses a button. So this script
  // never submits the form itself; it only says that it is on its way.
  for (const form of document.querySelectorAll("form[data-continue]")) {
    form.addEventListener("submit", () => form.classList.add("submitting"));
  }

  // "Copy" buttons copy the value of the field they name; their words come from the page.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = button.dataset.copied || "Copied";
      } catch {
        field.select();
        button.textContent = button.dataset.copyFailed || "Press Ctrl+C to copy";
      }
      setTimeout(() => { button.textContent = label; }, 2500);
    });
  }

  // The billing address shows a postal code and a state line only where the chosen country
  // uses them (the page says which, per country).
  const address = document.querySelector("[data-address-rules]");
  if (address) {
    const rules = JSON.parse(address.dataset.addressRules);
    const country = address.querySelector("select[name=country]");
    const show = () => {
      const [postal, state] = rules[country.value] || [true, false];
      address.querySelector("[data-address-field=postal]").hidden = !postal;
      address.querySelector("[data-address-field=state]").hidden = !state;
    };
    country.addEventListener("change", show);
  }

  // The language switch posts the language as soon as it is chosen.
  for (const select of document.querySelectorAll("select[data-submit-on-change]")) {
    select.addEventListener("change", () => select.form.submit());
    for (const button of select.form.querySelectorAll("button[type=submit]")) button.hidden = true;
  }

  // A charge in progress: ask its status every second, and show the outcome once it is known
  // (the page's <meta http-equiv="refresh"> does the same, more slowly, without script).
  const progress = document.querySelector("[data-poll]");
  if (progress) {
    const poll = async () => {
      try {
        const answer = await fetch(progress.dataset.poll, {headers: {Accept: "application/json"}});
        if (answer.ok && (await answer.json()).done) {
          window.location.reload();
          return;
        }
      } catch {
        // a network hiccup: try again
      }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }
});
