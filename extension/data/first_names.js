/*
 * Common first names in the Netherlands (a few hundred, chosen by the lesfocus authors from
 * the names children and staff at Dutch schools often have). The extension uses them only on
 * the device, to notice a classmate's name next to a class or school words in a draft
 * (content/checks.js); the list and the draft never leave the browser.
 */
(function (root) {
  "use strict";
  const names = `
    Aaron Abdel Abdullah Adam Adriaan Ahmed Aiden Ali Amir Anton Arjen Arthur Ayoub Bart Bas Bastiaan
    Benjamin Bilal Bjorn Boaz Boris Bram Brent Bryan Casper Cas Chris Christiaan Daan Daniel Dani
    David Dennis Dex Dirk Dylan Eelco Elias Emir Emre Erik Ezra Fabian Finn Floris Freek Gerben Gijs
    Guus Hamza Hidde Hugo Ibrahim Ilias Imran Ivo Jaap Jack Jacob Jan Jari Jasper Jay Jayden Jelle
    Jens Jesse Jim Job Joep Joey Johan Jonas Jonathan Joost Jordy Joris Jorn Joshua Jurre Justin
    Kai Karim Kees Koen Lars Lasse Laurens Levi Liam Loek Lorenzo Louis Luca Lucas Luuk Maarten
    Mads Mahmoud Marco Mark Mart Martijn Mason Mats Matthijs Max Maxim Mees Mehmet Melvin Merijn
    Micha Milan Milo Mohamed Mohammed Morris Mustafa Naud Nathan Niek Niels Noah Noud Olivier Omar
    Oscar Otis Owen Pepijn Pieter Quinn Quinten Ravi Reza Rick Rik Robin Roel Rowan Ruben Rutger
    Ryan Sam Samuel Sander Sebastiaan Sem Senna Siem Silas Sven Teun Thijs Thomas Tijn Tim Timo
    Tobias Tom Tristan Twan Valentijn Victor Vince Vincent Wessel Wouter Xavi Yassin Yusuf Zakaria
    Aaliyah Aicha Amber Amira Amy Anna Anne Annemijn Annika Anouk Aya Bente Bibi Bo Britt Carmen
    Caro Charlotte Chloe Cato Dana Danique Demi Dewi Dina Doris Eline Elif Elin Elise Ella Elena
    Elisa Ellen Emily Emma Esmee Esther Eva Evi Evy Fatima Fay Feline Femke Fenna Fien Fleur Floor
    Hannah Hanna Ilse Imane Indy Ines Iris Isa Isabel Isabella Ivy Jade Jana Janna Jasmijn Jet
    Jill Jip Joy Julia Julie Juliette Kim Kiki Lana Lara Laura Lauren Lea Leah Lena Lieke Lieve
    Lina Linde Lisa Lise Liv Livia Lize Lotte Lot Louise Luna Lynn Maaike Mara Maria Marit Marleen
    Maud Maya Meike Merel Mila Milou Mina Mirthe Myrthe Nadia Nienke Nina Noa Noor Noortje Nora
    Olivia Pien Puck Quinty Rosa Romy Roos Rosalie Sanne Sara Sarah Saar Selin Senna Sofia Sophie
    Sophia Stella Sterre Suze Tess Tessa Tirza Valerie Vera Veerle Vive Wende Yara Yasmin Zara Zoe
    Zoey Zeynep
  `.trim().split(/\s+/);
  const api = { names };
  root.LesfocusFirstNames = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
