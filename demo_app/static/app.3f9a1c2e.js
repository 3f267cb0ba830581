/* VoxLink demo UI: searches virtual numbers and reserves one for the signed-in demo user.
 * Plain script, no bundler; the file name carries a content hash so caches may keep it forever. */
(function () {
  "use strict";

  var USER_ID = 1; // the demo credential: Authorization: Bearer user-<id>
  var form = document.getElementById("search");
  var tbody = document.getElementById("numbers");
  var statusLine = document.getElementById("status");

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.className = isError ? "error" : "";
  }

  function request(method, path, body) {
    var init = {
      method: method,
      headers: { "Accept": "application/json", "Authorization": "Bearer user-" + USER_ID }
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (response) {
      return response.json().then(function (json) {
        if (!response.ok) {
          var message = json && json.error ? json.error.message : response.statusText;
          throw new Error(response.status + ": " + message);
        }
        return json;
      });
    });
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    return td;
  }

  function formatPrice(price) {
    var value = Number(price);
    return isNaN(value) ? price : "$" + value.toFixed(2);
  }

  function row(number) {
    var tr = document.createElement("tr");
    tr.appendChild(cell(number.number));
    tr.appendChild(cell(number.area_code));
    tr.appendChild(cell(number.status));
    tr.appendChild(cell((number.features || []).join(", ")));
    tr.appendChild(cell(formatPrice(number.monthly_price), "price"));
    var action = document.createElement("td");
    if (number.status === "AVAILABLE") {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Reserve";
      button.addEventListener("click", function () {
        reserve(number.id, button);
      });
      action.appendChild(button);
    }
    tr.appendChild(action);
    return tr;
  }

  function render(numbers) {
    while (tbody.firstChild) {
      tbody.removeChild(tbody.firstChild);
    }
    numbers.forEach(function (number) {
      tbody.appendChild(row(number));
    });
  }

  function search() {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (String(value).trim() !== "") {
        params.set(key, String(value).trim());
      }
    });
    setStatus("Searching…");
    return request("GET", "/api/numbers/search?" + params.toString())
      .then(function (result) {
        render(result.numbers);
        setStatus(result.count + (result.count === 1 ? " number" : " numbers"));
      })
      .catch(function (error) {
        setStatus(error.message, true);
      });
  }

  function reserve(id, button) {
    button.disabled = true;
    request("POST", "/api/numbers/" + id + "/reserve", { user_id: USER_ID })
      .then(function (number) {
        setStatus("Reserved " + number.number);
        return search();
      })
      .catch(function (error) {
        button.disabled = false;
        setStatus(error.message, true);
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    search();
  });

  search();
})();
