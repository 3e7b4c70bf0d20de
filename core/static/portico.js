// Portico's one script (the CSP allows no inline script): sign-in links that continue by
// themselves, and copy buttons. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A sign-in link's page continues with a POST; mail scanners, which run no script, stop here.
  for (const form of document.querySelectorAll("form[data-autosubmit]")) {
    form.classList.add("submitting");
    form.submit();
  }

  // "Copy" buttons copy the value of the field they name.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        field.select();
        button.textContent = "Press Ctrl+C to copy";
      }
      setTimeout(() => { button.textContent = label; }, 2500);
    });
  }
});
