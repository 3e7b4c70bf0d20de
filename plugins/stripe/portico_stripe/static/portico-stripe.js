// The Stripe plugin's one script (the CSP allows no inline script). The card page confirms a
// SetupIntent in Stripe's own card element and posts us only the SetupIntent's id; the payment
// page lets Stripe.js run the bank's 3-D Secure check, then asks our server for the outcome.
// Card details go from Stripe's element to Stripe, never through this script or our server.
"use strict";

function disable(form, busy) {
  form.querySelector("button[type=submit]").disabled = busy;
}

const cardForm = document.getElementById("stripe-card-form");
if (cardForm) {
  const stripe = Stripe(cardForm.dataset.publishableKey);
  const card = stripe.elements().create("card");
  const errors = document.getElementById("card-errors");
  card.mount("#card-element");
  cardForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    disable(cardForm, true);
    errors.textContent = "";
    const result = await stripe.confirmCardSetup(cardForm.dataset.clientSecret,
                                                 {payment_method: {card}});
    if (result.error) {
      errors.textContent = result.error.message || "The card could not be saved. Please try again.";
      disable(cardForm, false);
      return;
    }
    cardForm.elements.setup_intent.value = result.setupIntent.id;
    cardForm.submit();
  });
}

const paymentForm = document.getElementById("stripe-payment-form");
if (paymentForm) {
  const stripe = Stripe(paymentForm.dataset.publishableKey);
  paymentForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    disable(paymentForm, true);
    const result = await stripe.confirmCardPayment(paymentForm.dataset.clientSecret,
                                                   {payment_method: paymentForm.dataset.paymentMethod});
    if (result.error && result.error.message) {
      document.getElementById("payment-errors").textContent = result.error.message;
    }
    paymentForm.submit();  // our server asks Stripe what happened, whatever the browser says
  });
}
